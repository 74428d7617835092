"""``safehold serve`` for real: uvicorn on loopback, exercised over HTTP as a client would.

Covers the auth matrix over every operation in /openapi.json, jobs triggered
over HTTP and run by the in-process scheduler, cancelling, /metrics linted by
Debian's promtool, schemathesis against /openapi.json, and SIGTERM.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from e2e_support import Workspace, make_workspace
from prometheus_client.parser import text_string_to_metric_families

STARTUP_TIMEOUT = 60.0
JOB_TIMEOUT = 180.0

SCHEDULER = "scheduler: {jitter: 1s, retries: 0, prune_schedule: null, check_schedule: null}"
TARGETS = [
    {"name": "files", "tier": 2, "source": {"type": "files", "paths": ["data"]}, "retention": {"keep_last": 5},
     # Snapshots keep absolute paths, so the restored tree holds <workspace>/data/index.html.
     "restore_test": {"every": "7d",
                      "health_check": {"type": "command", "run": "test -n \"$(find . -name index.html)\""}}},
    {"name": "broken", "tier": 1, "source": {"type": "files", "paths": ["missing"]}},
]

#: Every operation of the API and the least role it needs. A new operation must be added here
#: (the matrix test fails otherwise), so none can ship without its auth being tested.
REQUIRED_ROLE = {
    ("GET", "/api/v1/targets"): "viewer",
    ("GET", "/api/v1/targets/{name}"): "viewer",
    ("GET", "/api/v1/snapshots"): "viewer",
    ("GET", "/api/v1/jobs"): "viewer",
    ("GET", "/api/v1/jobs/{job_id}"): "viewer",
    ("GET", "/api/v1/jobs/{job_id}/log"): "viewer",
    ("POST", "/api/v1/jobs"): "operator",
    ("POST", "/api/v1/jobs/{job_id}/cancel"): "operator",
    ("GET", "/api/v1/workers"): "viewer",
    ("GET", "/api/v1/tokens"): "admin",
    ("POST", "/api/v1/tokens"): "admin",
    ("DELETE", "/api/v1/tokens/{token_id}"): "admin",
}
OPEN = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")}
ROLES = ("viewer", "operator", "admin")

#: The metric families of the contract in docs/architecture.md.
METRIC_FAMILIES = {
    "safehold_backup_last_success_timestamp_seconds", "safehold_backup_last_attempt_timestamp_seconds",
    "safehold_backup_last_status", "safehold_backup_skipped_items", "safehold_backup_duration_seconds",
    "safehold_backup_bytes_read", "safehold_backup_bytes_added", "safehold_target_rpo_seconds",
    "safehold_target_rto_seconds",
    "safehold_restore_test_last_success_timestamp_seconds", "safehold_restore_test_last_status",
    "safehold_restore_test_last_duration_seconds", "safehold_restore_test_interval_seconds",
    "safehold_target_last_art_seconds",
    "safehold_jobs_running", "safehold_job_failures",
    "safehold_repository_stored_bytes", "safehold_repository_capacity_bytes", "safehold_repository_snapshots",
    "safehold_build_info", "safehold_copy_last_success_timestamp_seconds", "safehold_copy_last_bytes_sent",
    "safehold_snapshot_suspicious", "safehold_snapshot_suspicion_score",
}


class Server:
    """``safehold serve --port 0`` in a subprocess; the URL is read from uvicorn's start-up line."""

    def __init__(self, workspace: Workspace, *args: str) -> None:
        self.workspace = workspace
        self.process = workspace.start("serve", "--host", "127.0.0.1", "--port", "0", *args)
        self.output: list[str] = []
        started = threading.Event()
        self.url = ""

        def drain(stream) -> None:
            for line in stream:
                self.output.append(line)
                found = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", line)
                if found:
                    self.url = found.group(1)
                    started.set()

        for stream in (self.process.stdout, self.process.stderr):
            threading.Thread(target=drain, args=(stream,), daemon=True).start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not started.wait(0.1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"safehold serve did not start:\n{self.log}")
        self.client = httpx.Client(base_url=self.url, timeout=60)

    @property
    def log(self) -> str:
        return "".join(self.output)

    def request(self, method: str, path: str, token: str | None = None, **kwargs) -> httpx.Response:
        headers = kwargs.pop("headers", {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.client.request(method, path, headers=headers, **kwargs)

    def wait_job(self, job_id: int, token: str, timeout: float = JOB_TIMEOUT) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.request("GET", f"/api/v1/jobs/{job_id}", token).json()
            if job["status"] not in ("queued", "running"):
                return job
            assert time.monotonic() < deadline, f"job {job_id} still {job['status']}\n{self.log}"
            time.sleep(0.3)

    def stop(self, timeout: float = 60.0) -> int:
        self.client.close()
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"safehold serve ignored SIGTERM for {timeout}s\n{self.log}") from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def prepare(root: Path, catalog_url: str | None = None) -> tuple[Workspace, dict[str, str]]:
    """A workspace with a repository, one file to back up and a token per role."""
    workspace = make_workspace(root)
    config = workspace.write_config(TARGETS)
    extra = SCHEDULER + "\n" + (f"catalog: {{url: '{catalog_url}'}}\n" if catalog_url else "")
    config.write_text(config.read_text() + extra)
    (workspace.data / "index.html").write_text("<h1>safehold</h1>\n")
    workspace.run("init")
    tokens = {role: workspace.json("token", "create", "--name", f"test-{role}", "--role", role)["secret"]
              for role in ROLES}
    return workspace, tokens


@pytest.fixture
def servers():
    started: list[Server] = []

    def start(workspace: Workspace, *args: str) -> Server:
        server = Server(workspace, *args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """One API-only server (no scheduler: triggered jobs stay queued) shared by the read-mostly tests."""
    workspace, tokens = prepare(tmp_path_factory.mktemp("api") / "ws")
    server = Server(workspace, "--no-scheduler")
    yield server, tokens
    server.kill()


# --- auth --------------------------------------------------------------------------


def test_every_operation_refuses_a_missing_or_wrong_role_token(api) -> None:
    server, tokens = api
    spec = server.request("GET", "/openapi.json").json()
    operations = {(method.upper(), path) for path, item in spec["paths"].items() for method in item}
    assert operations - OPEN == set(REQUIRED_ROLE), "add new operations to REQUIRED_ROLE"
    revoked = server.workspace.json("token", "create", "--name", "revoked", "--role", "admin")
    server.workspace.run("token", "revoke", str(revoked["token"]["id"]))

    for (method, template), required in sorted(REQUIRED_ROLE.items()):
        def call(token: str | None, headers: dict | None = None, method: str = method,
                 template: str = template) -> httpx.Response:
            path, body = _instance(server, tokens, method, template)
            return server.request(method, path, token, json=body, headers=headers or {})

        where = f"{method} {template}"
        for token, headers in ((None, None), ("sht_not-a-real-token", None), (revoked["secret"], None),
                               (None, {"Authorization": f"Basic {tokens['admin']}"})):
            response = call(token, headers)
            assert response.status_code == 401, (where, token, response.text)
            assert response.headers["WWW-Authenticate"] == "Bearer", where
            assert response.json()["error"] == "Unauthorized"
        for role in ROLES[:ROLES.index(required)]:
            response = call(tokens[role])
            assert response.status_code == 403, (where, role, response.text)
            assert required in response.json()["message"]
        for role in ROLES[ROLES.index(required):]:
            response = call(tokens[role])
            assert 200 <= response.status_code < 300, (where, role, response.text)

    for method, path in OPEN:
        assert server.request(method, path).status_code == 200, path


def _instance(server: Server, tokens: dict[str, str], method: str, template: str) -> tuple[str, dict | None]:
    """A concrete, valid request for an operation (fresh objects where the call consumes them)."""
    admin = tokens["admin"]
    body = None
    values = {"name": "files"}
    if "{job_id}" in template:
        queued = server.request("POST", "/api/v1/jobs", admin, json={"kind": "backup", "target": "files"})
        values["job_id"] = str(queued.json()["id"])
    if "{token_id}" in template:
        created = server.request("POST", "/api/v1/tokens", admin, json={"name": "throwaway", "role": "viewer"})
        values["token_id"] = str(created.json()["token"]["id"])
    if (method, template) == ("POST", "/api/v1/jobs"):
        body = {"kind": "backup", "target": "files"}
    elif (method, template) == ("POST", "/api/v1/tokens"):
        body = {"name": "grafana", "role": "viewer"}
    return template.format(**values), body


def test_tokens_over_http(api) -> None:
    server, tokens = api
    created = server.request("POST", "/api/v1/tokens", tokens["admin"], json={"name": "ci", "role": "operator"})
    assert created.status_code == 201
    secret, token_id = created.json()["secret"], created.json()["token"]["id"]
    assert server.request("POST", "/api/v1/jobs", secret, json={"kind": "check"}).status_code == 202
    listed = server.request("GET", "/api/v1/tokens", tokens["admin"]).json()["tokens"]
    assert {"id": token_id, "name": "ci", "role": "operator"}.items() <= next(
        t for t in listed if t["id"] == token_id).items()
    assert all("secret" not in t and "hash" not in str(t) for t in listed)
    assert server.request("DELETE", f"/api/v1/tokens/{token_id}", tokens["admin"]).json()["active"] is False
    assert server.request("GET", "/api/v1/jobs", secret).status_code == 401
    assert server.request("DELETE", "/api/v1/tokens/999999", tokens["admin"]).status_code == 404
    # An admin cannot lock itself out with the token it is using.
    own = next(t["id"] for t in listed if t["name"] == "test-admin")
    assert server.request("DELETE", f"/api/v1/tokens/{own}", tokens["admin"]).status_code == 409
    assert server.request("GET", "/api/v1/tokens", tokens["admin"]).status_code == 200


# --- jobs ----------------------------------------------------------------------------


def test_cancel_and_refusals(api) -> None:
    server, tokens = api
    operator = tokens["operator"]
    queued = server.request("POST", "/api/v1/jobs", operator, json={"kind": "backup", "target": "files"})
    assert queued.status_code == 202 and queued.json()["status"] == "queued"
    job_id = queued.json()["id"]
    assert queued.json()["details"]["trigger"] == "api"
    cancelled = server.request("POST", f"/api/v1/jobs/{job_id}/cancel", operator)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = server.request("POST", f"/api/v1/jobs/{job_id}/cancel", operator)
    assert again.status_code == 409
    assert again.json()["message"] == f"job {job_id} is cancelled; only a queued job can be cancelled"
    for path in ("/api/v1/jobs/999999", "/api/v1/jobs/999999/log"):
        assert server.request("GET", path, operator).json()["error"] == "JobNotFound"
    assert server.request("POST", "/api/v1/jobs/999999/cancel", operator).status_code == 404
    for huge in (2**31, 10**19):  # beyond the catalog's 32-bit ids: refused, not an overflow inside
        assert server.request("GET", f"/api/v1/jobs/{huge}", operator).status_code == 422
    unknown = server.request("POST", "/api/v1/jobs", operator, json={"kind": "backup", "target": "nope"})
    assert unknown.status_code == 404 and "files" in unknown.json()["remedy"]  # names the known targets
    assert server.request("GET", "/api/v1/targets/nope", operator).status_code == 404
    for destination in ("/etc", "../outside", "a/../../outside"):
        refused = server.request("POST", "/api/v1/jobs", operator, json={
            "kind": "restore", "target": "files", "params": {"destination": destination}})
        assert refused.status_code == 422, destination
    for body in ({"kind": "backup"}, {"kind": "check", "params": {"read_data_percent": 101}},
                 {"kind": "backup", "target": "files", "params": {"tag": ["x"]}}, {"kind": "rm -rf"},
                 {"kind": "maintenance", "params": {"renew_within_days": -1}},
                 {"kind": "maintenance", "target": "files"}):
        assert server.request("POST", "/api/v1/jobs", operator, json=body).status_code == 422, body
    listed = server.request("GET", "/api/v1/jobs", operator, params={"status": "cancelled", "limit": 5}).json()
    assert job_id in [job["id"] for job in listed["jobs"]]


def test_jobs_triggered_over_http_run_in_the_server(tmp_path, servers) -> None:
    workspace, tokens = prepare(tmp_path / "ws")
    server = servers(workspace)
    operator, viewer = tokens["operator"], tokens["viewer"]
    assert server.request("GET", "/readyz").json() == {"status": "ready", "catalog": True, "scheduler": True}

    def submit(body: dict) -> dict:
        response = server.request("POST", "/api/v1/jobs", operator, json=body)
        assert response.status_code == 202, response.text
        return server.wait_job(response.json()["id"], viewer)

    backup = submit({"kind": "backup", "target": "files", "params": {"tags": ["api"]}})
    assert backup["status"] == "succeeded", backup
    assert backup["bytes_read"] > 0 and backup["snapshot_id"] and backup["duration_seconds"] >= 0
    log = server.request("GET", f"/api/v1/jobs/{backup['id']}/log", viewer).json()["lines"]
    assert any("snapshot" in line["message"] for line in log), log
    following = server.request("GET", f"/api/v1/jobs/{backup['id']}/log", viewer,
                               params={"after": log[0]["id"]}).json()["lines"]
    assert following == log[1:]

    test = submit({"kind": "restore-test", "target": "files"})
    assert test["status"] == "succeeded", test
    assert test["details"]["art_seconds"] > 0

    restore = submit({"kind": "restore", "target": "files", "params": {"destination": "from-api"}})
    assert restore["status"] == "succeeded", restore
    restored = list((workspace.state / "restores" / "from-api").rglob("index.html"))
    assert [path.read_text() for path in restored] == ["<h1>safehold</h1>\n"]

    # Object Lock maintenance on a local repository: nothing to extend, said in the job's own log.
    maintenance = submit({"kind": "maintenance", "params": {"renew_within_days": 1}})
    assert maintenance["status"] == "succeeded" and maintenance["details"]["retention_enabled"] is False, maintenance
    lines = server.request("GET", f"/api/v1/jobs/{maintenance['id']}/log", viewer).json()["lines"]
    assert [line["message"] for line in lines][-1] == "the repository has no object_lock: nothing to extend"

    snapshots = server.request("GET", "/api/v1/snapshots", viewer, params={"target": "files"}).json()["snapshots"]
    assert backup["snapshot_id"] in [snapshot["id"] for snapshot in snapshots]


    # The scheduler backs up 'broken' on its own (never backed up: due at once) and records the failure.
    deadline = time.monotonic() + JOB_TIMEOUT
    while not server.request("GET", "/api/v1/jobs", viewer,
                             params={"target": "broken", "status": "failed"}).json()["jobs"]:
        assert time.monotonic() < deadline, server.log
        time.sleep(0.5)

    targets = {t["name"]: t for t in server.request("GET", "/api/v1/targets", viewer).json()["targets"]}
    assert targets["files"]["compliant"] is True and targets["files"]["last_restore_test"]["passed"] is True
    assert targets["broken"]["compliant"] is False and targets["broken"]["last_success"] is None
    # The target detail carries the ART history and its verdict against the RTO.
    detail = server.request("GET", "/api/v1/targets/files", viewer).json()
    assert detail["art"]["history"][0]["job_id"] == test["id"] and detail["art"]["history"][0]["kind"] == "restore-test"
    assert detail["art"]["latest_seconds"] == test["details"]["art_seconds"] and detail["art"]["state"] == "ok"
    assert server.request("GET", "/api/v1/targets/broken", viewer).json()["art"]["state"] == "unmeasured"

    scraped = server.request("GET", "/metrics").text
    assert_promtool_clean(scraped)
    families = {family.name: family.samples for family in text_string_to_metric_families(scraped)}
    assert set(families) == METRIC_FAMILIES

    def sample(name: str, **labels: str) -> float:
        family = name.removesuffix("_total")
        [value] = [s.value for s in families[family]
                   if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
        return value

    assert sample("safehold_backup_last_status", target="files", tier="2", source="files") == 1
    assert sample("safehold_backup_last_status", target="broken", tier="1", source="files") == 0
    assert sample("safehold_job_failures_total", target="broken", kind="backup") >= 1
    assert sample("safehold_restore_test_last_duration_seconds", target="files") == test["details"]["art_seconds"]
    assert sample("safehold_target_last_art_seconds", target="files") == test["details"]["art_seconds"]
    assert sample("safehold_backup_last_success_timestamp_seconds", target="broken") == 0
    assert sample("safehold_restore_test_interval_seconds", target="files", tier="2", source="files") == 7 * 86400
    # 'broken' has no restore_test: none of the restore-test series, so RestoreTestOverdue cannot report it.
    assert not [s for name, samples in families.items() if name.startswith("safehold_restore_test_")
                for s in samples if s.labels.get("target") == "broken"]
    assert sample("safehold_repository_snapshots") >= 1

    # An operator's ransomware verdict is a job like every action (a viewer may not queue it).
    mark = {"kind": "mark", "target": "files",
            "params": {"snapshot": backup["snapshot_id"][:12], "verdict": "suspicious", "note": "seen encrypted"}}
    assert server.request("POST", "/api/v1/jobs", viewer, json=mark).status_code == 403
    marked = submit(mark)
    assert marked["status"] == "succeeded" and marked["details"]["ransomware"]["suspicious"] is True, marked
    verdicts = {row["id"]: row["verdict"] for row in server.request(
        "GET", "/api/v1/snapshots", viewer, params={"target": "files"}).json()["snapshots"]}
    assert verdicts[backup["snapshot_id"]]["source"] == "operator"
    assert verdicts[backup["snapshot_id"]]["note"] == "seen encrypted"
    detail = server.request("GET", "/api/v1/targets/files", viewer).json()
    assert detail["ransomware"]["suspicious"] is True and detail["ransomware"]["since"] == backup["snapshot_id"]
    assert server.request("POST", "/api/v1/jobs", operator, json=dict(mark, params={
        "snapshot": backup["snapshot_id"], "verdict": "fine"})).status_code == 422
    suspicious = [s for family in text_string_to_metric_families(server.request("GET", "/metrics").text)
                  for s in family.samples if s.name == "safehold_snapshot_suspicious"]
    assert [(s.labels["target"], s.value) for s in suspicious] == [("files", 1.0)]

    assert server.stop() == 0, server.log
    assert workspace.json("jobs", "--status", "running") == []
    assert "scheduler stopped" in server.log


def test_sigterm_while_a_job_runs_leaves_nothing_running(tmp_path, servers) -> None:
    workspace, tokens = prepare(tmp_path / "ws")
    # Enough data that the backup is still running when SIGTERM arrives.
    big = workspace.data / "big"
    big.mkdir()
    for index in range(40):
        (big / f"{index}.bin").write_bytes(os.urandom(2 << 20))
    server = servers(workspace, "--stop-timeout", "0")
    job_id = server.request("POST", "/api/v1/jobs", tokens["operator"],
                            json={"kind": "backup", "target": "files"}).json()["id"]
    deadline = time.monotonic() + JOB_TIMEOUT
    while server.request("GET", f"/api/v1/jobs/{job_id}", tokens["viewer"]).json()["status"] == "queued":
        assert time.monotonic() < deadline, server.log
        time.sleep(0.05)
    assert server.stop() == 0, server.log
    statuses = {job["id"]: job["status"] for job in workspace.json("jobs", "--limit", "100")}
    assert "running" not in statuses.values(), statuses
    assert statuses[job_id] in ("succeeded", "interrupted")


# --- metrics and schema -----------------------------------------------------------------


def assert_promtool_clean(exposition: str) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: scripts/services.d/prometheus.sh install (Debian's prometheus)"
    checked = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 0 and not checked.stdout.strip() and not checked.stderr.strip(), (
        checked.stdout + checked.stderr)


def test_metrics_of_a_fresh_control_plane_pass_promtool(api) -> None:
    server, _ = api
    response = server.request("GET", "/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert_promtool_clean(response.text)


@pytest.mark.parametrize("catalog", ["sqlite", "postgresql"])
def test_schemathesis_finds_no_server_error(tmp_path, servers, catalog: str) -> None:
    # Its own server: schemathesis creates and revokes tokens and queues and cancels jobs at random.
    # On PostgreSQL too, which refuses what SQLite lets pass (NUL in strings, ids past 2**31).
    catalog_url = None
    if catalog == "postgresql":
        catalog_url = os.environ.get("SAFEHOLD_TEST_POSTGRES_URL")
        if not catalog_url:
            pytest.skip("set SAFEHOLD_TEST_POSTGRES_URL=postgresql+psycopg://... (scripts/services.sh start does)")
    workspace, tokens = prepare(tmp_path / "ws", catalog_url=catalog_url)
    server = servers(workspace, "--no-scheduler")
    script = Path(sys.executable).with_name("schemathesis")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "schemathesis.cli"]
    run = subprocess.run(
        [*command, "run", f"{server.url}/openapi.json", "--header", f"Authorization: Bearer {tokens['admin']}",
         "--checks", "all", "--max-examples", "30", "--workers", "1", "--request-timeout", "30"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""})
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-4000:] + server.log[-4000:]
    assert "No issues found" in run.stdout


# --- tokens in query strings, docs pages, the missing extra ---------------------------------


def test_a_token_in_a_query_string_is_refused_and_never_reaches_the_access_log(api) -> None:
    server, tokens = api
    secret = tokens["admin"]
    for path in (f"/api/v1/jobs?token={secret}", f"/api/v1/jobs?limit=1&access_token={secret}",
                 f"/api/v1/targets?x={secret.replace('_', '%5F')}", f"/healthz?{secret}=1"):
        response = server.request("GET", path)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"] == "TokenInQueryString" and secret not in response.text
    wrong_place = server.request("GET", f"/api/v1/jobs/{secret}/log", secret)  # not a query, but logged too
    assert wrong_place.status_code == 422 and secret not in wrong_place.text
    marker = server.request("GET", "/healthz?after-the-token-requests=1")
    assert marker.status_code == 200
    deadline = time.monotonic() + 10
    while "after-the-token-requests" not in server.log and time.monotonic() < deadline:
        time.sleep(0.1)  # the access log line is written after the answer
    log = server.log
    assert "after-the-token-requests" in log, log[-2000:]
    access = [line for line in log.splitlines() if '"GET /api/v1/' in line or '"GET /healthz?' in line]
    assert sum("REDACTED" in line for line in access) >= 5, access
    assert secret not in log and secret.replace("_", "%5F") not in log
    assert secret[4:] not in log  # not even the random part


def test_docs_pages_need_a_token_and_openapi_stays_open(api) -> None:
    server, tokens = api
    for page in ("/docs", "/redoc"):
        refused = server.request("GET", page)
        assert refused.status_code == 401 and refused.json()["error"] == "Unauthorized", page
        assert server.request("GET", page, tokens["viewer"]).status_code == 200, page
    assert server.request("GET", "/openapi.json").status_code == 200


# A sitecustomize-like start: block the server extra's modules, then run the CLI as its script does.
WITHOUT_EXTRA = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("fastapi", "uvicorn"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Block())
from safehold.cli.main import run
sys.argv = ["safehold", *sys.argv[1:]]
run()
"""


def test_serve_without_the_server_extra_names_it(workspace: Workspace) -> None:
    proc = subprocess.run([sys.executable, "-c", WITHOUT_EXTRA, "serve", "--port", "0"], cwd=workspace.root,
                          env=workspace.environment(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "pip install 'safehold[server]'" in proc.stderr and "'server' extra" in proc.stderr, proc.stderr
    assert "fastapi" in proc.stderr and "uvicorn" in proc.stderr
    assert "this is a bug" not in proc.stderr and "Traceback" not in proc.stderr


# --- the token commands -------------------------------------------------------------------


def test_token_commands(workspace: Workspace) -> None:
    from e2e_support import assert_clean_error

    created = workspace.json("token", "create", "--name", "grafana", "--role", "viewer")
    secret = created["secret"]
    plain = workspace.run("token", "create", "--name", "ci", "--role", "operator")
    assert plain.stdout.strip().startswith("sht_") and "cannot be shown again" in plain.stderr
    listed = workspace.json("token", "list")["tokens"]
    assert [(t["name"], t["role"], t["active"]) for t in listed] == [("grafana", "viewer", True),
                                                                      ("ci", "operator", True)]
    listing = workspace.run("token", "list").stdout
    assert secret not in listing and "grafana" in listing
    catalog_bytes = b"".join(path.read_bytes() for path in workspace.state.glob("catalog.db*"))  # with the WAL
    assert b"grafana" in catalog_bytes
    assert secret.encode() not in catalog_bytes
    revoked = workspace.json("token", "revoke", str(created["token"]["id"]))
    assert revoked["active"] is False
    assert [t["name"] for t in workspace.json("token", "list")["tokens"]] == ["ci"]
    assert len(workspace.json("token", "list", "--all")["tokens"]) == 2
    assert_clean_error(workspace.run("token", "revoke", "999", ok=False), 36, "no API token 999")
    assert_clean_error(workspace.run("token", "create", "--name", "x", "--role", "root", ok=False), 2, "root",
                       hint=False)


def test_prometheus_scrapes_the_server(api, tmp_path) -> None:
    """Debian's Prometheus 2.42 itself scrapes /metrics: the content type, names and labels it stores."""
    import socket

    server, _ = api
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: scripts/services.d/prometheus.sh install (Debian's prometheus)"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: safehold\n    static_configs: [{{targets: ['{server.url.removeprefix('http://')}']}}]\n")
    process = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                                f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        result: list = []
        while not result:
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "Prometheus stored no safehold_target_rpo_seconds within 90 s"
            time.sleep(1)
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/api/v1/query",
                                   params={"query": "safehold_target_rpo_seconds"}, timeout=10).json()
            except httpx.TransportError:
                continue
            result = answer.get("data", {}).get("result", [])
        series = {item["metric"]["target"]: item for item in result}
        assert float(series["files"]["value"][1]) == 43200
        assert series["broken"]["metric"] == {"__name__": "safehold_target_rpo_seconds", "job": "safehold",
                                              "instance": server.url.removeprefix("http://"), "target": "broken",
                                              "tier": "1", "source": "files"}
        up = httpx.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": 'up{job="safehold"}'},
                       timeout=10).json()["data"]["result"]
        assert [item["value"][1] for item in up] == ["1"]
    finally:
        process.terminate()
        process.wait(30)
