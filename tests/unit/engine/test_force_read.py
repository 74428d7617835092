"""``backup --force-read``: every file and image file read whole, even when its metadata match
the parent's (restic's ``--force``); without it they are taken from the parent unread."""
from __future__ import annotations

import json
import os
from pathlib import Path

from safehold.engine.backup import backup_targets
from safehold.engine.context import Context

from control_support import files_workspace  # noqa: E402


def workspace(tmp_path: Path) -> Path:
    """A files target (``docs``: three files) and an image target (a 2 MiB file) in one targets.yml."""
    config = files_workspace(tmp_path, ("docs",))
    (tmp_path / "docs" / "b").write_bytes(os.urandom(300_000))
    (tmp_path / "docs" / "c").write_bytes(b"c" * 70_000)
    (tmp_path / "disk.img").write_bytes(os.urandom(1 << 20) + b"\0" * (1 << 20))
    config.write_text(config.read_text() + '  - {"name": "disk", "tier": 1, "source": {"type": "image", '
                      f'"path": "{tmp_path / "disk.img"}", "chunk_size": "64KiB"}}}}\n')
    return config


def run(config: Path, **options) -> dict[str, dict]:
    context = Context.load(config)
    try:
        result = backup_targets(context, ["docs", "disk"], **options)
    finally:
        context.close()
    assert not result.failures
    return {r.target: r.summary for r in result.results}


def test_force_read_reads_unchanged_files_and_images_whole(tmp_path: Path):
    config = workspace(tmp_path)
    first = run(config)
    assert first["docs"]["files_new"] == 3
    unchanged = run(config)
    assert unchanged["docs"]["files_unchanged"] == 3 and unchanged["docs"]["bytes_read"] == 0
    assert unchanged["disk"]["bytes_read"] == 0
    forced = run(config, force_read=True)
    assert forced["docs"]["files_unchanged"] == 0
    assert forced["docs"]["bytes_read"] == 4000 + 300_000 + 70_000
    assert forced["disk"]["bytes_read"] >= 1 << 20  # the data half at least (holes may be skipped)
    assert forced["docs"]["bytes_added"] == 0 and forced["disk"]["bytes_added"] == 0  # same content: deduplicated
    again = run(config)  # the next run without it skips again
    assert again["docs"]["files_unchanged"] == 3 and again["disk"]["bytes_read"] == 0


def test_force_read_through_the_cli(tmp_path: Path, monkeypatch, capsys):
    from typer.testing import CliRunner

    from safehold.cli.main import app

    config = workspace(tmp_path)
    run(config)
    monkeypatch.setenv("SAFEHOLD_NO_SERVER", "1")
    out = CliRunner().invoke(app, ["-c", str(config), "backup", "--all", "--force-read", "--json"])
    assert out.exit_code == 0, out.output
    results = {r["target"]: r["summary"] for r in json.loads(out.stdout)["results"]}
    assert results["docs"]["files_unchanged"] == 0 and results["docs"]["bytes_read"] == 374_000
