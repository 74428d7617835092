"""The restore seam: the destination registry, the options models and the one restore job through
the queue and the API (platform destinations are exercised for real in tests/contract)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from control_support import files_target, make_context
from hostile_support import disk, write_snapshot

from safehold import errors
from safehold.catalog.tokens import TokenStore
from safehold.engine.jobs import run_job, submit_job
from safehold.restore import base
from safehold.server.app import create_app
from safehold.sources import REGISTRY as SOURCES


@pytest.fixture
def context(tmp_path):
    context = make_context(tmp_path / "ws", [files_target(tmp_path / "ws", "web")])
    yield context
    context.close()


def test_every_source_kind_has_a_destination() -> None:
    for kind, (_module, _class, destination) in SOURCES.items():
        assert base.destination_for_source(kind, destination) == destination
        assert base.destination_class(destination).__name__ == base.REGISTRY[destination][1]


def test_the_registry_refuses_a_source_kind_without_a_destination() -> None:
    with pytest.raises(errors.UsageError, match="'postgres' has no restore destination"):
        base.destination_for_source("postgres", None)
    with pytest.raises(errors.UsageError, match="unknown restore destination 'tape'"):
        base.destination_class("tape")


def test_destinations_satisfy_the_protocol() -> None:
    for kind in base.REGISTRY:
        cls = base.destination_class(kind)
        for method in ("plan", "write", "commit", "rollback"):
            assert callable(getattr(cls, method)), (kind, method)
    assert isinstance(base.destination_class("ebs").__new__(base.destination_class("ebs")), base.PlatformSnapshots)


def test_a_queued_restore_takes_destination_or_to_not_both(context, tmp_path) -> None:
    with pytest.raises(errors.UsageError, match="unknown parameter .destination."):
        submit_job(context, "restore", "web", {"destination": str(tmp_path / "x"),
                                               "to": {"kind": "hyperv", "name": "a", "host_path": "C:\\VMs"}})
    with pytest.raises(errors.UsageError, match="to.libvirt.define.*wrong type"):
        submit_job(context, "restore", "web", {"to": {"kind": "libvirt", "define": 3}})
    job_id = submit_job(context, "restore", "web", {"to": {"kind": "libvirt", "images_dir": str(tmp_path / "i")}})
    job = run_job(context, job_id)  # nothing backed up yet: the one restore job fails as usual
    assert job.status == "failed" and job.error_type == "SnapshotNotFound"


def test_api_restore_to_a_platform_keeps_files_in_the_restore_root(context, tmp_path) -> None:
    root = tmp_path / "restores"
    with context.locked() as repository:
        snapshot = write_snapshot(repository, [disk(b"disk", b"data")], kind="image", target="web")
    _, token = TokenStore(context.catalog).create("t", "operator")
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(context, restore_root=root)) as client:
        outside = client.post("/api/v1/jobs", headers=headers, json={
            "kind": "restore", "target": "web",
            "params": {"snapshot": snapshot.id, "to": {"kind": "libvirt", "images_dir": str(tmp_path / "elsewhere")}}})
        assert outside.status_code == 422 and "images_dir" in outside.text  # relative to the root only
        queued = client.post("/api/v1/jobs", headers=headers, json={
            "kind": "restore", "target": "web",
            "params": {"snapshot": snapshot.id, "to": {"kind": "libvirt", "images_dir": "vm1", "define": "copy"}}})
        assert queued.status_code == 202, queued.text
        params = queued.json()["details"]["params"]
        assert params["to"] == {"kind": "libvirt", "images_dir": str(root / "vm1"), "define": "copy"}
        schema = client.get("/openapi.json").json()["components"]["schemas"]
        assert {"ApiLibvirtOptions", "VmwareOptions", "ApiHypervOptions", "EbsOptions"} <= set(schema)
    job = run_job(context, queued.json()["id"])
    # Not a libvirt snapshot: refused by plan, before anything is written.
    assert job.status == "failed" and "not of a libvirt domain" in job.error, job
    assert not (root / "vm1").exists()


def test_flattened_disk_names_stay_single_components(context, tmp_path) -> None:
    """Restore tests write a VMware disk 'vm1/Hard disk 1' as 'vm1-Hard disk 1'; unsafe names stay refused."""
    from safehold.engine.restore import restore_snapshot

    with context.locked() as repository:
        snapshot = write_snapshot(repository, [disk(b"vm1/Hard disk 1", b"one"), disk(b"../escape", b"two"),
                                               disk(b"a/../b", b"three")], kind="image", target="web")
    spec = {"kind": "image", "path": str(tmp_path / "out"), "into_directory": True, "flatten_names": True}
    with pytest.raises(errors.RestoreIncomplete) as caught:
        restore_snapshot(context, snapshot.id, spec, target="web")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["vm1-Hard disk 1"]
    assert caught.value.fields["outcome"].damaged == ["../escape: unsafe disk name, not restored",
                                                      "a/../b: unsafe disk name, not restored"]
    assert not (tmp_path / "escape").exists()


@pytest.mark.parametrize("image_format", ["raw", "qcow2"])
def test_libvirt_images_below_the_restore_root_never_go_through_a_symlink(memory_repository, tmp_path,
                                                                         image_format) -> None:
    """An API restore's images folder is walked from the restore root without following links, and
    the images are written through the folder's descriptor (qemu-img included), so a symlink an
    earlier restore planted, on the way or at an image's name, is refused and nothing outside changes."""
    from safehold.restore.base import SnapshotInfo
    from safehold.restore.libvirt import LibvirtDestination
    from safehold.restore.options import LibvirtOptions

    root, outside = tmp_path / "restores", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "vm-vda.img").write_bytes(b"precious")
    written = write_snapshot(memory_repository, [disk(b"vda", b"disk data" * 1000)], kind="image", target="vm")
    info = SnapshotInfo(id=written.id, short_id=written.id[:8], target="vm", kind="images",
                        source={"domain_xml": "<domain><name>vm</name><devices/></domain>", "domain": "vm"})
    suffix = image_format  # images are named DOMAIN-DISK.FORMAT

    def restore(images_dir: Path) -> LibvirtDestination:
        destination = LibvirtDestination(LibvirtOptions(kind="libvirt", images_dir=str(images_dir),
                                                        format=image_format), restore_root=str(root))
        plan = destination.plan(info, list(memory_repository.read_tree(written)))
        try:
            destination.write(memory_repository, plan, lambda done, current: None)
            destination.commit()
        except errors.SafeholdError:
            destination.rollback()
            raise
        return destination

    (root / "planted").symlink_to(outside)  # a folder on the way is a link out of the root
    with pytest.raises(errors.DestinationError, match="symlink or not a directory"):
        restore(root / "planted")
    (root / "vms").mkdir()  # a link at the image's own name
    (root / "vms" / f"vm-vda.{suffix}").symlink_to(outside / "vm-vda.img")
    with pytest.raises(errors.DestinationError):
        restore(root / "vms")
    assert sorted(p.name for p in outside.iterdir()) == ["vm-vda.img"]
    assert (outside / "vm-vda.img").read_bytes() == b"precious"
    (root / "vms" / f"vm-vda.{suffix}").unlink()
    restore(root / "vms")  # and without the links, it restores
    assert (root / "vms" / f"vm-vda.{suffix}").is_file()
    assert sorted(p.name for p in (root / "vms").iterdir()) == [f"vm-vda.{suffix}"]  # no raw leftover
