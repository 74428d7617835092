"""The platform fixtures of the integration suites, shared with the destination contract suite.

Each suite's conftest is loaded here under its own module name (they are all called conftest.py)
and its fixtures re-exported, so the contract suite reuses them rather than copying them.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


sys.path.insert(0, str(TESTS / "unit" / "restore"))  # hostile_support: snapshots written item by item
sys.path.insert(0, str(TESTS / "integration" / "ssh"))  # ssh_support
_libvirt = _load("contract_libvirt_conftest", TESTS / "integration" / "libvirt" / "conftest.py")
_vmware = _load("contract_vmware_conftest", TESTS / "integration" / "vmware" / "conftest.py")
_ebs = _load("contract_ebs_conftest", TESTS / "integration" / "ebs" / "conftest.py")
_hyperv = _load("contract_hyperv_conftest", TESTS / "hyperv" / "conftest.py")
_ssh = _load("contract_ssh_conftest", TESTS / "integration" / "ssh" / "conftest.py")

libvirt_uri, connection, make_domain = _libvirt.libvirt_uri, _libvirt.connection, _libvirt.make_domain
lab = _vmware.lab
moto_server, aws = _ebs.moto_server, _ebs.aws
host = _hyperv.host
ssh_server = _ssh.ssh_server
