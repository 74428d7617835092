"""The VMware driver's pure parts: server addresses, datastore paths, read-ahead bounds, config."""

from __future__ import annotations

from pathlib import Path

import pytest

from safehold.config.models import Config
from safehold.platforms.vmware.datastore import DatastoreReader, flat_path, parse_path, url_path
from safehold.platforms.vmware.session import split_server, ssl_context


def test_split_server() -> None:
    assert split_server("vcenter.example.com") == ("vcenter.example.com", 443)
    assert split_server("10.0.0.5:8443") == ("10.0.0.5", 8443)
    assert split_server("[fd00::5]:9443") == ("fd00::5", 9443)
    assert split_server("[fd00::5]") == ("fd00::5", 443)


def test_certificates_are_checked_by_default() -> None:
    import ssl

    checked = ssl_context(False, None)
    assert checked.verify_mode == ssl.CERT_REQUIRED and checked.check_hostname
    assert ssl_context(True, None).verify_mode == ssl.CERT_NONE


def test_datastore_paths() -> None:
    assert parse_path("[LocalDS_0] DC0_H0_VM0/disk1.vmdk") == ("LocalDS_0", "DC0_H0_VM0/disk1.vmdk")
    assert parse_path("[datastore 1] my vm/my vm.vmdk") == ("datastore 1", "my vm/my vm.vmdk")
    assert flat_path("vm/disk1.vmdk") == "vm/disk1-flat.vmdk"
    assert url_path("Folder/DC 1", "datastore 1", "my vm/my vm-flat.vmdk") == \
        "/folder/my%20vm/my%20vm-flat.vmdk?dcPath=Folder%2FDC+1&dsName=datastore+1"
    with pytest.raises(ValueError):
        parse_path("vm/disk1.vmdk")


class FakeSession:
    cookie = "vmware_soap_session=x"


def test_read_ahead_stays_inside_the_extent_being_read() -> None:
    MiB = 1024 * 1024
    reader = DatastoreReader(FakeSession(), "DC0", "ds", "vm/disk-flat.vmdk", 64 * MiB,
                             extents=[(0, MiB), (10 * MiB, 20 * MiB)])
    assert reader._limit(0) == MiB  # never past the extent: the rest was not asked for
    assert reader._limit(10 * MiB) == 10 * MiB + DatastoreReader.READ_AHEAD
    assert reader._limit(29 * MiB) == 30 * MiB
    assert reader._limit(40 * MiB) == 40 * MiB  # outside every extent: exactly what is asked
    whole = DatastoreReader(FakeSession(), "DC0", "ds", "d", 5 * MiB, extents=None)
    assert whole._limit(0) == 5 * MiB


def test_read_serves_from_the_read_ahead_buffer() -> None:
    fetched: list[tuple[int, int]] = []
    reader = DatastoreReader(FakeSession(), "DC0", "ds", "d", 4096, extents=[(0, 4096)])

    def get(offset: int, length: int) -> bytes:
        fetched.append((offset, length))
        return bytes((offset + i) % 251 for i in range(length))

    reader._get = get  # the HTTP part is tested against vcsim; this is the buffering
    assert reader.read_at(0, 512) == bytes(i % 251 for i in range(512))
    assert reader.read_at(512, 512) == bytes((512 + i) % 251 for i in range(512))
    assert fetched == [(0, 4096)]


def vmware_config(tmp_path: Path, **source: object) -> dict:
    return {"repository": {"url": str(tmp_path / "repo")},
            "targets": [{"name": "vm", "tier": 1, "source": {"type": "vmware", "server": "vc", "user": "u", **source}}]}


def test_config_requires_a_selection_and_resolves_files(tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="selects no VM"):
        Config.model_validate(vmware_config(tmp_path))
    config = Config.model_validate(vmware_config(tmp_path, vms=["db"], ca_file="ca.pem"),
                                   context={"base_dir": tmp_path})
    source = config.targets[0].source
    assert source.ca_file == str(tmp_path / "ca.pem") and source.insecure is False and source.quiesce is True
    with pytest.raises(ValidationError, match="not an environment variable name"):
        Config.model_validate(vmware_config(tmp_path, vms=["db"], password_env="NOT-A-NAME"))


def test_registry_has_a_restore_path_for_vmware() -> None:
    from safehold.sources import REGISTRY

    assert REGISTRY["vmware"] == ("safehold.sources.vmware", "VmwareSource", "vmware")
