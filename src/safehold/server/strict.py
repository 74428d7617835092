"""What the API refuses before a route runs: JSON that is not JSON, tokens in query strings.

- **Non-finite numbers.** Python's ``json`` accepts ``NaN``, ``Infinity`` and
  ``-Infinity``, which RFC 8259 does not; a NaN that reached a model would be
  echoed into the error answer and fail to render (a plain-text 500). Bodies are
  parsed strictly instead, so the request gets a 400 in the documented shape.
- **Tokens in the query string.** Query strings end up in access logs, proxy
  logs and browser histories. A request carrying a token there (a parameter named
  like one, or any value holding safehold's ``sht_`` token prefix) is refused
  before authentication, and ``redact_target`` keeps it out of uvicorn's access
  log (``serve.py`` installs ``RedactTokens`` on that logger's handler).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import unquote, unquote_plus

from fastapi import Request, Response
from fastapi.routing import APIRoute

#: Query parameter names that carry credentials in other APIs; never accepted here.
TOKEN_PARAMETERS = frozenset({"token", "access_token", "api_key", "apikey", "api-key", "key", "auth",
                              "authorization", "bearer", "secret", "password"})
TOKEN_PREFIX = "sht_"
REDACTED = "REDACTED"
_CONSTANTS = ("NaN", "-Infinity", "Infinity")


class _NonFinite(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NonFinite(name)


def loads_strict(body: bytes | str) -> Any:
    """``json.loads`` without NaN and Infinity; raises ``json.JSONDecodeError`` (FastAPI answers it as invalid)."""
    try:
        return json.loads(body, parse_constant=_refuse_constant)
    except _NonFinite as refused:
        text = body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else body
        name = str(refused)
        position = max(text.find(name), 0)
        raise json.JSONDecodeError(f"{name} is not a JSON number (RFC 8259 has no NaN or Infinity)", text,
                                   position) from None


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads_strict(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """An APIRoute whose request bodies are parsed by :func:`loads_strict`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict_handler


def token_in_query(query_items: list[tuple[str, str]]) -> str | None:
    """The name of the first query parameter that carries (or is named for) a token, else None."""
    for name, value in query_items:
        if name.lower() in TOKEN_PARAMETERS or TOKEN_PREFIX in value.lower() or TOKEN_PREFIX in name.lower():
            return name
    return None


def redact_target(target: str) -> str:
    """A request target (path and query) with every token-bearing part replaced, for logs."""
    path, mark, query = target.partition("?")
    segments = [REDACTED if TOKEN_PREFIX in unquote(segment).lower() else segment for segment in path.split("/")]
    path = "/".join(segments)
    if not mark:
        return path
    parts = []
    for part in query.split("&"):
        name, equals, value = part.partition("=")
        plain_name, plain_value = unquote_plus(name), unquote_plus(value)
        if token_in_query([(plain_name, plain_value)]) is not None:
            parts.append(f"{REDACTED if TOKEN_PREFIX in plain_name.lower() else name}{equals}{REDACTED}")
        else:
            parts.append(part)
    return f"{path}?{'&'.join(parts)}"


class RedactTokens(logging.Filter):
    """For uvicorn's access log: its records carry the request target as the third argument."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_target(args[2]), *args[3:])
        elif isinstance(record.msg, str) and TOKEN_PREFIX in record.msg.lower():
            record.msg = re.sub(r"(?i)sht_[A-Za-z0-9_\-]*", REDACTED, record.msg)
        return True


class RefuseTokensInQuery:
    """ASGI middleware: a request with a token in its query string gets a 400 and reaches no route."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("query_string"):
            from urllib.parse import parse_qsl

            from fastapi.responses import JSONResponse

            items = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
            name = token_in_query(items)
            if name is not None:
                shown = REDACTED if TOKEN_PREFIX in name.lower() else name
                response = JSONResponse(status_code=400, content={
                    "error": "TokenInQueryString",
                    "message": f"the query string carries an API token (parameter {shown!r}); tokens are taken only "
                               "from the Authorization header, since query strings end up in access logs, proxy "
                               "logs and browser histories",
                    "remedy": "send it as 'Authorization: Bearer <token>'; if the token was sent to a proxy or "
                              "over a network you do not control, revoke it ('safehold token revoke ID') and "
                              "create a new one",
                })
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
