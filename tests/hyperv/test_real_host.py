"""Opt-in: the Hyper-V driver against a real host. Never runs in CI (no Hyper-V host exists
there); everything else in this folder runs against the fake host.

    SAFEHOLD_TEST_HYPERV='https://EXAMPLE%5Csvc-backup@hv01.example:5986/test-vm?verify=1&path=D:%5CRestores'
    SAFEHOLD_HYPERV_PASSWORD=...                      # the account's password (not in the URL)

The VM should be small and disposable. The test backs it up twice (full, then RCT
incremental), restores the disks locally and checks that no safehold checkpoint is left on
the host; with ``path=`` it also restores it as a new VM named ``<vm>-safehold-test-<random>``
and leaves that VM for you to inspect and delete.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

SPEC = os.environ.get("SAFEHOLD_TEST_HYPERV")
pytestmark = pytest.mark.skipif(
    not SPEC, reason="set SAFEHOLD_TEST_HYPERV=https://user@host:5986/vm (a real Hyper-V host; none exists in CI)")


def test_backup_incremental_and_restore_on_a_real_host(tmp_path: Path, fast_kdf: dict,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from safehold.engine.backup import backup_target
    from safehold.engine.context import Context
    from safehold.engine.maintenance import init_repository
    from safehold.engine.restore import restore_snapshot
    from safehold.platforms.hyperv import scripts
    from safehold.sources.hyperv import CHECKPOINT_PREFIX, HyperVSource

    url = urlsplit(SPEC)
    query = parse_qs(url.query)
    vm = unquote(url.path.strip("/"))
    verify = query.get("verify", ["1"])[0] != "0"
    (tmp_path / "targets.yml").write_text(
        f"repository: {{url: {tmp_path / 'repo'}}}\nstate_dir: {tmp_path / 'state'}\n"
        "tiers: {1: {rpo: 1h, rto: 1h}}\ntargets:\n  - name: real\n    tier: 1\n"
        f"    source: {{type: hyperv, host: '{url.hostname}', vm: '{vm}', port: {url.port or 5986}, "
        f"ssl: {str(url.scheme == 'https').lower()}, verify_certificate: {str(verify).lower()}, "
        f"username: '{unquote(url.username or '')}'}}\n")
    monkeypatch.setenv("SAFEHOLD_PASSWORD", "test")
    context = Context.load(tmp_path / "targets.yml")
    init_repository(context)
    full = backup_target(context, "real")
    incremental = backup_target(context, "real")
    assert incremental.parent_id == full.snapshot_id
    assert incremental.summary["bytes_read"] < full.summary["bytes_read"]
    restore_snapshot(context, incremental.snapshot_id, str(tmp_path / "disks"), target="real")
    source = HyperVSource(host=url.hostname, vm=vm, port=url.port or 5986, ssl=url.scheme == "https",
                          verify_certificate=verify, username=unquote(url.username or ""))
    shell = source.connect()
    try:
        described = shell.run(scripts.DESCRIBE_VM, Name=vm)
        left = [c for c in shell.run(scripts.LIST_CHECKPOINTS, VMId=described["Id"]) or []
                if c["Name"].startswith(CHECKPOINT_PREFIX)]
        assert left == []
    finally:
        shell.close()
    if "path" in query:
        spec = {"kind": "hyperv", "name": f"{vm}-safehold-test-{uuid.uuid4().hex[:6]}", "host_path": query["path"][0]}
        result = restore_snapshot(context, incremental.snapshot_id, spec, target="real").details
        assert result["vm_id"]
    context.close()
