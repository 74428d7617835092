"""The FastAPI application: open probes and metrics, the token-protected API, error mapping.

``create_app(context, scheduler=...)`` builds the app around one engine
``Context`` (configuration, catalog, repository access) shared by every
request thread; when given a scheduler, the app's lifespan starts it and, on
shutdown (uvicorn turns SIGTERM into one), stops it so that running jobs
finish or are recorded interrupted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__, errors
from ..catalog.tokens import TokenStore
from . import schemas
from .auth import require
from .metrics import MetricsExposition
from .routes import router
from .strict import RefuseTokensInQuery

if TYPE_CHECKING:
    from ..engine.context import Context
    from ..scheduler import Scheduler

log = logging.getLogger("safehold.server")

#: The classic Prometheus text format, which generate_latest writes for our (plain ASCII) names and which
#: every Prometheus parses; newer prometheus-client versions would announce 1.0.0, unknown to Prometheus 2.x.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: HTTP status of each expected safehold error; anything else is a 500.
STATUS_OF: dict[type[errors.SafeholdError], int] = {
    errors.UsageError: 400,
    errors.TargetNotFound: 404,
    errors.DrillNotFound: 404,
    errors.CopyNotFound: 404,
    errors.JobNotFound: 404,
    errors.TokenNotFound: 404,
    errors.SnapshotNotFound: 404,
    errors.AmbiguousSnapshot: 400,
    errors.JobNotRunnable: 409,
    errors.RepositoryLocked: 409,
    errors.RepositoryDoesNotExist: 503,
    errors.PasswordMissing: 503,
    errors.WrongPassword: 503,
    errors.BackendError: 503,
}


def status_of(error: errors.SafeholdError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return 500


def create_app(context: Context, *, scheduler: Scheduler | None = None, stop_timeout: float = 30.0,
               restore_root: str | Path | None = None) -> FastAPI:
    """The API around ``context``.

    ``restore_root``: API-triggered restores write only inside this directory
    (default ``<state_dir>/restores``), so an operator token cannot overwrite
    arbitrary files of the server host.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if scheduler is not None:
            scheduler.start()
            log.info("scheduler started")
        # The read side's safety net (engine.status.StatusCache.verify) in a thread of its own, so no
        # scrape or status request waits for its reading of every target's jobs.
        stop_net = threading.Event()
        threading.Thread(target=app.state.statuses.run_safety_net, args=(stop_net,), daemon=True,
                         name="safehold-status-net").start()
        try:
            yield
        finally:
            stop_net.set()
            if scheduler is not None:
                interrupted = scheduler.stop(stop_timeout)
                log.info("scheduler stopped%s", f"; interrupted job(s) {interrupted}" if interrupted else "")

    app = FastAPI(
        title="safehold control plane",
        version=__version__,
        description=(
            "Backup and disaster-recovery control plane. Authenticate with 'Authorization: Bearer <token>' "
            "(tokens from 'safehold token create'): viewer reads, operator also starts and cancels jobs, admin "
            "also manages tokens. /healthz, /readyz, /metrics and this description (/openapi.json) are open; "
            "/docs and /redoc need a viewer token. Tokens are never taken from the query string (400). "
            "Errors are {error, message, remedy}; malformed requests add details [{loc, message, type}]."
        ),
        lifespan=lifespan,
        # The interactive pages are served below, behind a token; /openapi.json stays open (it describes
        # the API of an open-source program and holds no data; clients and schemathesis read it).
        docs_url=None,
        redoc_url=None,
        responses={401: {"model": schemas.Problem, "description": "No valid API token"},
                   403: {"model": schemas.Problem, "description": "The token's role is too low"}},
    )
    context.catalog  # opened now, in one thread, rather than raced for by the first requests
    app.state.context = context
    app.state.tokens = TokenStore(context.catalog)
    app.state.scheduler = scheduler
    app.state.restore_root = Path(restore_root or Path(context.config.state_dir) / "restores").resolve()
    from ..engine.status import StatusCache

    # One status computation shared by /metrics and the targets API, redone when the catalog changes.
    app.state.statuses = StatusCache(context)
    exposition = MetricsExposition(context, statuses=app.state.statuses)

    @app.exception_handler(errors.SafeholdError)
    async def safehold_error(request: Request, error: errors.SafeholdError) -> JSONResponse:
        code = status_of(error)
        if code >= 500:
            log.error("%s %s: %s", request.method, request.url.path, error, exc_info=error.bug)
        return JSONResponse(status_code=code, content={"error": type(error).__name__, "message": error.message,
                                                       "remedy": error.hint})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        # Starlette logs the traceback itself; the client gets the documented shape, not plain text.
        return JSONResponse(status_code=500, content={
            "error": "InternalError", "message": "internal error while handling the request",
            "remedy": "this is a bug in safehold; the server's log has the traceback, please report it"})

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        # FastAPI's own answer is {"detail": [...]} and echoes each offending value, which may not even
        # be renderable; the documented shape instead, with where and what but never the value.
        problems = list(error.errors())
        details = [{"loc": [part if isinstance(part, int) else str(part) for part in problem.get("loc", ())],
                    "message": str(problem.get("msg", "")), "type": str(problem.get("type", ""))}
                   for problem in problems]
        not_json = next((p for p in problems if p.get("type") == "json_invalid"), None)
        if not_json is not None:
            reason = str((not_json.get("ctx") or {}).get("error", "JSON decode error"))
            return JSONResponse(status_code=400, content={
                "error": "InvalidJSON", "message": f"the request body is not valid JSON: {reason}",
                "remedy": "send a JSON document (RFC 8259: no NaN or Infinity, strings in double quotes) with "
                          "'Content-Type: application/json'", "details": details})
        where = "; ".join(f"{'.'.join(str(part) for part in d['loc'])}: {d['message']}" for d in details[:3])
        more = f" (and {len(details) - 3} more)" if len(details) > 3 else ""
        return JSONResponse(status_code=422, content={
            "error": "InvalidRequest", "message": f"the request does not match the API: {where}{more}",
            "remedy": "correct the fields named in details; /openapi.json describes every request",
            "details": details})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        # One error shape for every non-validation error (401, 403, 404, 409), as declared in the OpenAPI.
        name = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
                409: "Conflict"}.get(error.status_code, "HTTPError")
        headers = dict(getattr(error, "headers", None) or {})
        if error.status_code == 405:
            # Starlette names only the first route matching the path; GET and POST of one path are two routes.
            headers["Allow"] = ", ".join(_allowed_methods(app, request))
        return JSONResponse(status_code=error.status_code, headers=headers or None,
                            content={"error": name, "message": str(error.detail), "remedy": ""})

    @app.get("/healthz", response_model=schemas.Health, tags=["probes"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers HTTP."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=schemas.Readiness, tags=["probes"],
             responses={503: {"model": schemas.Readiness, "description": "Not ready"}})
    def readyz() -> Any:
        """Readiness: the catalog answers and, when started with one, the scheduler runs."""
        try:
            with context.catalog.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            catalog_ok = True
        except Exception as error:
            log.warning("readiness: catalog unavailable: %s", error)
            catalog_ok = False
        scheduler_ok = None if scheduler is None else scheduler.alive
        ready = catalog_ok and scheduler_ok is not False
        body = {"status": "ready" if ready else "not ready", "catalog": catalog_ok, "scheduler": scheduler_ok}
        return body if ready else JSONResponse(status_code=503, content=body)

    @app.get("/metrics", tags=["probes"], response_class=Response,
             responses={200: {"content": {METRICS_CONTENT_TYPE: {"schema": {"type": "string"}}},
                              "description": "Prometheus text exposition"}})
    def metrics() -> Response:
        """Prometheus metrics, computed from the catalog at scrape time (see docs/architecture.md)."""
        return Response(exposition.render(), media_type=METRICS_CONTENT_TYPE)

    @app.get("/docs", include_in_schema=False, response_class=HTMLResponse)
    def docs(_: Any = Depends(require("viewer"))) -> HTMLResponse:
        """Swagger UI (needs a viewer token, like the data it lets one query)."""
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - docs")

    @app.get("/redoc", include_in_schema=False, response_class=HTMLResponse)
    def redoc(_: Any = Depends(require("viewer"))) -> HTMLResponse:
        return get_redoc_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - ReDoc")

    app.include_router(router)
    # Outermost: a token in the query string is refused before any route, auth or validation sees it.
    app.add_middleware(RefuseTokensInQuery)
    return app


def _allowed_methods(app: FastAPI, request: Request) -> list[str]:
    # Matched by path pattern over every route with one (the API router's routes and the app's own),
    # not by Route.matches, whose behaviour for included routers differs between FastAPI releases.
    methods: set[str] = set()
    path = request.url.path
    for route in [*app.routes, *router.routes]:
        pattern = getattr(route, "path_regex", None)
        if pattern is not None and pattern.match(path):
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)
