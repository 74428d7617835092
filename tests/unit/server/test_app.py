"""The application in-process (Starlette's TestClient over ASGI): readiness, error shapes, Allow headers."""

from __future__ import annotations

import textwrap

import pytest
from fastapi.testclient import TestClient

from safehold import errors
from safehold.catalog import Catalog
from safehold.catalog.tokens import TokenStore
from safehold.config import load_config_text
from safehold.engine.context import Context
from safehold.scheduler import Scheduler
from safehold.server.app import create_app, status_of


@pytest.fixture
def context(tmp_path):
    config = load_config_text(textwrap.dedent("""\
        repository: {url: repo, password_env: SAFEHOLD_TEST_APP_PASSWORD}
        state_dir: state
        targets:
          - {name: web, tier: 1, source: {type: files, paths: [data]}}
        """), tmp_path / "targets.yml")
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}")
    yield Context(config, _catalog=catalog)
    catalog.close()


def test_readiness_follows_the_scheduler_thread(context: Context) -> None:
    scheduler = Scheduler(context, poll_interval=0.1)
    with TestClient(create_app(context, scheduler=scheduler, stop_timeout=5)) as client:
        assert client.get("/readyz").json() == {"status": "ready", "catalog": True, "scheduler": True}
        scheduler.stop(timeout=5)  # the loop thread ends, as if it had died
        response = client.get("/readyz")
        assert response.status_code == 503 and response.json()["scheduler"] is False
        assert client.get("/healthz").status_code == 200  # alive, just not ready


def test_errors_have_one_shape_and_405_lists_every_method(context: Context) -> None:
    _, token = TokenStore(context.catalog).create("t", "operator")
    with TestClient(create_app(context)) as client:
        response = client.delete("/api/v1/jobs")
        assert response.status_code == 405
        assert set(response.headers["Allow"].split(", ")) >= {"GET", "POST"}
        missing = client.get("/api/v1/jobs/12345", headers={"Authorization": f"Bearer {token}"})
        assert missing.status_code == 404
        assert missing.json() == {"error": "JobNotFound", "message": "no job 12345 in the catalog",
                                  "remedy": "list recent jobs with 'safehold jobs'"}
        # No repository at 'repo' yet: the snapshot listing is unavailable (503), not a crash.
        unavailable = client.get("/api/v1/snapshots", headers={"Authorization": f"Bearer {token}"})
        assert unavailable.status_code == 503 and unavailable.json()["error"] in ("RepositoryDoesNotExist",
                                                                                 "PasswordMissing")
        # ... and /metrics still answers, without the repository's families.
        metrics = client.get("/metrics").text
        assert "safehold_target_rpo_seconds" in metrics and "safehold_repository_snapshots" not in metrics


def test_http_status_of_errors() -> None:
    assert status_of(errors.TargetNotFound(name="x", path="p", known="y")) == 404
    assert status_of(errors.UsageError("bad")) == 400
    assert status_of(errors.JobNotRunnable(job_id=1, detail="it is running")) == 409
    assert status_of(errors.RepositoryLocked(kind="exclusive", holder="h", since="now")) == 409
    assert status_of(errors.WrongPassword(url="file:///r")) == 503
    assert status_of(errors.InternalError("boom")) == 500


SHAPE = {"error", "message", "remedy"}


@pytest.mark.parametrize("body", [
    '{"kind": "check", "params": {"read_data_percent": NaN}}',
    '{"kind": "check", "params": {"read_data_percent": Infinity}}',
    '{"kind": "check", "params": {"read_data_percent": -Infinity}}',
    '{"kind": NaN}',
    '{"kind": "check",',
])
def test_a_body_that_is_not_json_gets_400_in_the_documented_shape(context: Context, body: str) -> None:
    _, token = TokenStore(context.catalog).create("t", "operator")
    with TestClient(create_app(context), raise_server_exceptions=False) as client:
        response = client.post("/api/v1/jobs", content=body,
                               headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    answer = response.json()
    assert set(answer) == SHAPE | {"details"} and answer["error"] == "InvalidJSON"
    assert "not valid JSON" in answer["message"] and "NaN" in answer["remedy"]
    if "NaN" in body or "Infinity" in body:
        assert "is not a JSON number" in answer["message"]
    assert answer["details"][0]["loc"][0] == "body"


def test_validation_errors_use_the_documented_shape_and_never_echo_the_value(context: Context) -> None:
    _, token = TokenStore(context.catalog).create("t", "admin")
    auth = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(context)) as client:
        path = client.get("/api/v1/jobs/not-a-number", headers=auth)
        assert path.status_code == 422
        assert set(path.json()) == SHAPE | {"details"} and path.json()["error"] == "InvalidRequest"
        assert path.json()["details"][0]["loc"] == ["path", "job_id"] and "not-a-number" not in path.text
        body = client.post("/api/v1/tokens", json={"name": "ok", "role": "root-please-secret-value"}, headers=auth)
        assert body.status_code == 422, body.text
        answer = body.json()
        assert "detail" not in answer and answer["error"] == "InvalidRequest"
        assert ["body", "role"] in [d["loc"] for d in answer["details"]] and "body.role" in answer["message"]
        assert "root-please-secret-value" not in body.text
        assert answer["remedy"]
        query = client.get("/api/v1/jobs", params={"limit": "-5"}, headers=auth)
        assert query.status_code == 422 and query.json()["details"][0]["loc"] == ["query", "limit"]


def test_openapi_declares_the_error_shape_for_malformed_requests(context: Context) -> None:
    with TestClient(create_app(context)) as client:
        spec = client.get("/openapi.json").json()  # open: it describes the API, holds no data
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and {"error", "message", "remedy", "details"} <= set(
        schemas["ValidationProblem"]["properties"])
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            for code in ("400", "422"):
                if code in operation["responses"] and path.startswith("/api/"):
                    ref = operation["responses"][code]["content"]["application/json"]["schema"]["$ref"]
                    assert ref.rsplit("/", 1)[1] in ("ValidationProblem", "Problem"), (method, path, code)
    assert "/docs" not in spec["paths"] and "/redoc" not in spec["paths"]


def test_docs_and_redoc_need_a_token(context: Context) -> None:
    _, token = TokenStore(context.catalog).create("t", "viewer")
    with TestClient(create_app(context)) as client:
        for page in ("/docs", "/redoc"):
            refused = client.get(page)
            assert refused.status_code == 401 and refused.json()["error"] == "Unauthorized"
            shown = client.get(page, headers={"Authorization": f"Bearer {token}"})
            assert shown.status_code == 200 and "/openapi.json" in shown.text
        assert client.get("/docs/oauth2-redirect").status_code == 404
        assert client.get("/openapi.json").status_code == 200


@pytest.mark.parametrize("query", ["token={t}", "access_token={t}", "api_key=x", "target=files&foo={t}",
                                   "x=sht%5Fabc", "Authorization=Bearer%20{t}"])
def test_a_token_in_the_query_string_is_refused(context: Context, query: str) -> None:
    _, token = TokenStore(context.catalog).create("t", "viewer")
    with TestClient(create_app(context)) as client:
        response = client.get(f"/api/v1/jobs?{query.format(t=token)}", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 400, response.text
        answer = response.json()
        assert set(answer) == SHAPE and answer["error"] == "TokenInQueryString"
        assert "Authorization: Bearer" in answer["remedy"] and token not in response.text
        # The same request without it is fine; so are probes with harmless queries.
        assert client.get("/api/v1/jobs?limit=1", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert client.get("/healthz?probe=1").status_code == 200


def test_access_log_targets_are_redacted() -> None:
    from safehold.server.strict import redact_target

    token = "sht_" + "A1b2-_" * 8
    assert redact_target(f"/api/v1/jobs?token={token}&limit=5") == "/api/v1/jobs?token=REDACTED&limit=5"
    assert redact_target(f"/api/v1/jobs?x={token}") == "/api/v1/jobs?x=REDACTED"
    assert redact_target("/api/v1/jobs?x=sht%5Fabc") == "/api/v1/jobs?x=REDACTED"
    assert redact_target(f"/api/v1/jobs/{token}/log") == "/api/v1/jobs/REDACTED/log"
    assert redact_target(f"/api/v1/jobs?{token}=1") == "/api/v1/jobs?REDACTED=REDACTED"
    assert redact_target("/api/v1/jobs?target=web&limit=5") == "/api/v1/jobs?target=web&limit=5"
    assert redact_target("/healthz") == "/healthz"


def test_an_unexpected_error_is_a_500_in_the_documented_shape(context: Context) -> None:
    app = create_app(context)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("not for the client")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    assert response.status_code == 500 and response.headers["content-type"] == "application/json"
    assert set(response.json()) == SHAPE and "not for the client" not in response.text


def test_workers_list_is_empty_with_the_thread_executor(context: Context) -> None:
    _, token = TokenStore(context.catalog).create("t", "viewer")
    with TestClient(create_app(context)) as client:
        answer = client.get("/api/v1/workers", headers={"Authorization": f"Bearer {token}"})
        metrics = client.get("/metrics").text
    assert answer.status_code == 200 and answer.json() == {"executor": "thread", "workers": []}
    assert "safehold_worker_up" not in metrics
