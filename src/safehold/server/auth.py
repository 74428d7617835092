"""Bearer-token authentication and role checks for the API.

``Depends(require("operator"))`` on a route: no or an unknown/revoked token
gives 401 (with ``WWW-Authenticate: Bearer``), a valid token whose role is
below the required one gives 403. Tokens are looked up by their SHA-256 in
the catalog (``safehold.catalog.tokens``).
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..catalog.tokens import TokenRecord, TokenStore, role_allows

bearer = HTTPBearer(auto_error=False, description="An API token from 'safehold token create'.")


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def require(role: str) -> Callable[..., TokenRecord]:
    """A dependency that admits tokens of ``role`` or a higher one and returns the token's record."""

    def check(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> TokenRecord:
        if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
            raise _unauthorized("an API token is required: send 'Authorization: Bearer <token>'")
        tokens: TokenStore = request.app.state.tokens
        record = tokens.authenticate(credentials.credentials)
        if record is None:
            raise _unauthorized("the API token is unknown or revoked")
        if not role_allows(record.role, role):
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                detail=f"this needs the {role} role; the token has {record.role}")
        return record

    check.__name__ = f"require_{role}"
    return check
