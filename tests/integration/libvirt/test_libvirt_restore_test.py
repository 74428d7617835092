"""A restore test of a libvirt target: its disks restored as images into the sandbox through the
image destination (the hypervisor is not touched), the health check run on them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from safehold import errors
from safehold.engine.backup import backup_target
from safehold.engine.context import Context
from safehold.engine.restore_test import run_restore_test

MiB = 1024 * 1024


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def with_health_check(context: Context, path: Path, check: dict) -> Context:
    """The same workspace (``path``: its targets.yml), its target given ``restore_test: {health_check: check}``."""
    config = yaml.safe_load(path.read_text())
    config["targets"][0]["restore_test"] = {"every": "7d", "health_check": check}
    path.write_text(yaml.safe_dump(config))
    context.close()
    return Context.load(path)


def test_restore_test_of_a_libvirt_target_checks_its_disk_images(make_domain, safehold, tmp_path):
    domain = make_domain(running=False)
    domain.start()
    domain.write(0x3C, 2 * MiB, 64 * 1024)
    domain.stop()
    context = safehold(domain)
    backup_target(context, "vm")
    expected = sha256(domain.copy_image(tmp_path / "expected.raw"))
    config = tmp_path / "ws-0" / "targets.yml"  # what the safehold fixture wrote
    context = with_health_check(context, config, {"type": "checksum", "path": "vda", "sha256": expected})
    try:
        result = run_restore_test(context, "vm")
        assert result.passed and result.files == 1 and result.detail == "vda has the expected SHA-256"
        assert not domain.domain.isActive() and domain.checkpoints() != []  # the domain itself untouched
        context = with_health_check(context, config, {"type": "checksum", "path": "vda", "sha256": "0" * 64})
        with pytest.raises(errors.RestoreTestFailed):
            run_restore_test(context, "vm")
        sandboxes = Path(context.config.state_dir) / "restore-tests"
        assert list(sandboxes.iterdir()) == []  # removed after a pass and a failure alike
    finally:
        context.close()
