"""GET /api/v1/snapshots says what ``safehold snapshots`` says: which snapshot a repaired one replaces
(``original``), which one was forgotten and is present again (``replayed``, with its forget record),
and what a backup left out (``skipped``). In-process (TestClient) over a real local repository."""

from __future__ import annotations

import dataclasses
import os
import textwrap
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from safehold.catalog import Catalog
from safehold.catalog.tokens import TokenStore
from safehold.config import load_config_text
from safehold.engine.context import Context
from safehold.repository import Repository
from safehold.repository.archiver import Archiver
from safehold.repository.backends import Kind
from safehold.repository.backends.local import LocalBackend
from safehold.repository.prune import ForgetDecision, forget
from safehold.server.app import create_app
from safehold.sources.files import FilesSource

PASSWORD = "api snapshots"


@pytest.fixture
def context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast_kdf: dict):
    monkeypatch.setenv("SAFEHOLD_TEST_SNAPSHOTS_PASSWORD", PASSWORD)
    config = load_config_text(textwrap.dedent("""\
        repository: {url: repo, password_env: SAFEHOLD_TEST_SNAPSHOTS_PASSWORD}
        state_dir: state
        targets:
          - {name: web, tier: 1, source: {type: files, paths: [data]}}
        """), tmp_path / "targets.yml")
    Repository.init(LocalBackend(str(tmp_path / "repo")), PASSWORD.encode(), fast_kdf)
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}")
    yield Context(config, _catalog=catalog)
    catalog.close()


def backup(repository: Repository, root: Path):
    with repository.lock(purpose="backup web"), FilesSource([str(root)]).open() as view:
        repository.load_index()
        return Archiver(repository, threads=1).snapshot(view, "web", None)


def test_snapshots_carry_original_replayed_and_skipped(context: Context, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a").write_bytes(os.urandom(10_000))
    repository = context.open_repository(load_index=False)
    forgotten = backup(repository, data)
    (data / "b").write_bytes(os.urandom(10_000))
    kept = backup(repository, data)
    # What 'repair snapshots' writes: a copy that names the snapshot it replaces.
    repaired_id = repository.save_snapshot(dataclasses.replace(kept, id="", original=kept.id, tags=["repaired"]))
    # Forgotten (with its record), then its object put back: a replay.
    raw = repository.backend.get(Kind.SNAPSHOTS, forgotten.id)
    with repository.lock(purpose="forget"):
        forget(repository, [ForgetDecision(forgotten, False, [])], "forget by id")
    repository.backend.put(Kind.SNAPSHOTS, forgotten.id, raw)

    _, token = TokenStore(context.catalog).create("t", "viewer")
    with TestClient(create_app(context)) as client:
        response = client.get("/api/v1/snapshots", headers={"Authorization": f"Bearer {token}"})
        schema = client.get("/openapi.json").json()["components"]["schemas"]
    assert response.status_code == 200, response.text
    by_id = {snapshot["id"]: snapshot for snapshot in response.json()["snapshots"]}
    assert set(by_id) == {forgotten.id, kept.id, repaired_id}

    replayed = by_id[forgotten.id]["replayed"]
    assert replayed is not None and replayed["snapshot"] == forgotten.id
    assert replayed["reason"] == "forget by id" and replayed["target"] == "web" and replayed["forgotten_at"]
    assert replayed["unreadable"] is None and len(replayed["name"]) == 64
    assert by_id[kept.id]["replayed"] is None and by_id[repaired_id]["replayed"] is None

    assert by_id[repaired_id]["original"] == kept.id
    assert by_id[kept.id]["original"] is None and by_id[forgotten.id]["original"] is None

    for snapshot in by_id.values():
        assert snapshot["skipped"] == {"count": 0, "reasons": {}, "items": [], "truncated": False}

    assert {"original", "replayed", "skipped"} <= set(schema["Snapshot"]["properties"])
    assert "forgotten_at" in schema["ForgetRecord"]["properties"]


def test_repair_jobs_queued_over_the_api_repair_the_repository(context: Context, tmp_path: Path) -> None:
    """POST /jobs takes repair-index and repair-snapshots; the queued jobs run as the CLI's commands do."""
    from safehold.engine.jobs import run_job
    from safehold.repository.check import check
    from safehold.repository.repair import _chunk_ids

    data = tmp_path / "data"
    data.mkdir()
    for name in ("a", "b"):
        (data / name).write_bytes(os.urandom(200_000))
    repository = context.open_repository(load_index=False)
    first = backup(repository, data)
    (data / "c").write_bytes(os.urandom(200_000))
    second = backup(repository, data)
    _, token = TokenStore(context.catalog).create("ops", "operator")
    auth = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(context)) as client:
        def submit(body: dict) -> dict:
            response = client.post("/api/v1/jobs", json=body, headers=auth)
            assert response.status_code == 202, response.text
            assert response.json()["status"] == "queued"
            record = run_job(context, response.json()["id"])
            assert record.status == "succeeded", (record.error, record.details)
            return client.get(f"/api/v1/jobs/{record.id}", headers=auth).json()

        # A lost index object: check fails; the repair-index job brings the index back.
        repository.backend.delete(Kind.INDEX, sorted(repository.index_names())[-1])
        assert not check(context.open_repository(load_index=False)).ok
        job = submit({"kind": "repair-index"})
        assert job["kind"] == "repair-index" and job["details"]["params"] == {}
        assert check(context.open_repository(load_index=False)).ok

        # A flipped byte in file a's data: repair-snapshots (read_data) writes the first snapshot again without it.
        fresh = context.open_repository()
        [item] = [i for i in fresh.read_tree(first) if i["path"].endswith(b"/a")]
        location = fresh.index.lookup(next(_chunk_ids(item)))
        [pack_file] = (tmp_path / "repo" / "data").glob(f"*/{location.pack}")
        raw = bytearray(pack_file.read_bytes())
        raw[location.offset + location.length // 2] ^= 0xFF
        pack_file.chmod(0o600)
        pack_file.write_bytes(bytes(raw))
        job = submit({"kind": "repair-snapshots", "params": {"snapshots": [first.id[:8]], "read_data": True}})
        assert job["details"]["params"] == {"snapshots": [first.id[:8]], "read_data": True}
        listed = {s["id"]: s for s in client.get("/api/v1/snapshots", headers=auth).json()["snapshots"]}
        repaired = [s for s in listed.values() if s["original"] == first.id]
        assert len(repaired) == 1 and first.id in listed and second.id in listed, listed
        assert repaired[0]["files"] == 1  # b kept, a dropped

        refused = client.post("/api/v1/jobs", json={"kind": "repair-snapshots", "params": {"snapshots": ["../x"]}},
                              headers=auth)
        assert refused.status_code == 422 and refused.json()["error"] == "InvalidRequest", refused.text
        unknown = client.post("/api/v1/jobs", json={"kind": "repair-index", "params": {"all": True}}, headers=auth)
        assert unknown.status_code == 422, unknown.text
