"""``type: command`` with real programs: tar's output backed up as one file, restored into a
directory and piped back into tar; a failing program, its standard error, and a timeout."""

from __future__ import annotations

import hashlib
import os
import subprocess
import textwrap
import uuid
from pathlib import Path

import pytest

from safehold import errors

PASSWORD = "command-suite-password"


@pytest.fixture
def safehold(tmp_path, fast_kdf):
    from safehold.engine.context import Context
    from safehold.engine.maintenance import init_repository

    contexts = []

    def make(source: str) -> Context:
        folder = tmp_path / f"ws-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
        path = folder / "targets.yml"
        path.write_text(textwrap.dedent(f"""\
            repository: {{url: {folder / 'repo'}, password_env: SAFEHOLD_TEST_COMMAND_PASSWORD}}
            catalog: {{url: "sqlite:///{folder / 'state' / 'catalog.db'}"}}
            state_dir: {folder / 'state'}
            targets:
              - name: export
                tier: 3
                source: {source}
            """))
        os.environ["SAFEHOLD_TEST_COMMAND_PASSWORD"] = PASSWORD
        context = Context.load(path)
        init_repository(context)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


def tree(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n")
    (root / "sub" / "b.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    return root


def listing(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def snapshots(context) -> list:
    with context.locked() as repository:
        return repository.list_snapshots()


def test_a_programs_output_is_backed_up_restored_and_piped_back(tmp_path, safehold):
    from safehold.engine.backup import backup_target
    from safehold.engine.restore import restore_snapshot

    root = tree(tmp_path)
    context = safehold(f'{{type: command, run: "tar -c -C {root} .", name: data.tar}}')
    result = backup_target(context, "export")
    assert result.summary["files"] == 1 and result.summary["bytes_read"] > 3 * 1024 * 1024

    # As a file ...
    out = tmp_path / "out"
    restore_snapshot(context, result.snapshot_id, str(out))
    assert subprocess.run(["tar", "-tf", str(out / "data.tar")], capture_output=True, check=True).stdout
    # ... or piped into a program, nothing written locally by safehold.
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    outcome = restore_snapshot(context, result.snapshot_id, {"kind": "command", "run": f"tar -x -C {unpacked}"})
    assert outcome.details["exit_status"] == 0 and outcome.bytes_written == result.summary["bytes_read"]
    assert listing(unpacked) == listing(root)

    # A second run reads the output again (it cannot know it is unchanged) and stores almost nothing.
    second = backup_target(context, "export")
    assert second.summary["bytes_read"] == result.summary["bytes_read"]
    assert second.summary["bytes_added"] < result.summary["bytes_added"] / 10


def test_a_failing_program_writes_no_snapshot_and_its_stderr_is_in_the_error_and_the_log(safehold):
    from safehold.engine.backup import backup_target

    context = safehold('{type: command, run: "echo partial output; echo disk quota exceeded >&2; exit 3", '
                       'name: dump.sql}')
    with pytest.raises(errors.CommandFailed) as caught:
        backup_target(context, "export")
    assert "exit status 3" in str(caught.value) and "disk quota exceeded" in str(caught.value)
    assert caught.value.exit_code == 69
    assert snapshots(context) == []
    job = context.catalog.list_jobs(kind="backup")[0]
    assert job.status == "failed"


def test_standard_error_of_a_successful_program_goes_to_the_job_log(safehold):
    from safehold.engine.backup import backup_target

    context = safehold('{type: command, run: "echo warning: table t skipped >&2; printf data", name: out.txt}')
    result = backup_target(context, "export")
    lines = [record.message for record in context.catalog.job_logs(result.job_id)]
    assert any("out.txt: warning: table t skipped" in line for line in lines)


def test_a_program_past_its_timeout_is_stopped(safehold):
    from safehold.engine.backup import backup_target

    context = safehold('{type: command, run: "printf started; sleep 60", name: slow.txt, timeout: 1s}')
    with pytest.raises(errors.CommandFailed, match="still running after 1s"):
        backup_target(context, "export")
    assert snapshots(context) == []


def test_a_failing_restore_command_fails_the_restore(tmp_path, safehold):
    from safehold.engine.backup import backup_target
    from safehold.engine.restore import restore_snapshot

    context = safehold('{type: command, run: "seq 1 100000", name: numbers.txt}')
    snapshot = backup_target(context, "export").snapshot_id
    with pytest.raises(errors.CommandFailed, match="exit status 2"):
        restore_snapshot(context, snapshot, {"kind": "command", "run": "head -c 10 >/dev/null; echo nope >&2; exit 2"})


def test_a_name_with_a_slash_is_refused(safehold):
    with pytest.raises(errors.ConfigError, match="one file name"):
        safehold('{type: command, run: "true", name: ../etc/passwd}')
