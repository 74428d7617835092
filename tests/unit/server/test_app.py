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
