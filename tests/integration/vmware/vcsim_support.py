"""The vSphere lab of the VMware tests: vcsim (built from Debian's govmomi source by
scripts/services.d/vcsim.sh) behind the TLS proxy that emulates CBT (vsphere_proxy.py).

``Lab`` starts both, on loopback ports chosen by the kernel, with a throwaway CA,
and offers the guest-side actions tests need: grow a VM's disk, write into it
(vcsim's disks are plain local files), read it back, list its snapshots, delete it.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

from vsphere_proxy import VsphereProxy

ROOT = Path(__file__).resolve().parents[3]
DEFAULT_VCSIM = "/var/cache/safehold-test/vcsim/bin/vcsim"


def vcsim_binary() -> str:
    """The vcsim binary; built on first use when the services script has not run yet."""
    path = os.environ.get("SAFEHOLD_TEST_VCSIM", DEFAULT_VCSIM)
    if not os.access(path, os.X_OK):
        subprocess.run(["bash", str(ROOT / "scripts/services.d/vcsim.sh"), "install"], check=True)
    return path


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, server.pem, server.key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "safehold test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    ca_file, cert_file, key_file = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_file, cert_file, key_file


class Lab:
    USER, PASSWORD = "user", "pass"  # vcsim's default login

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.process = subprocess.Popen([vcsim_binary(), "-l", "127.0.0.1:0", "-username", self.USER,
                                         "-password", self.PASSWORD], stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        line = self.process.stdout.readline()
        match = re.search(r"VCSIM_URL=\w+://[^@]*@([\d.]+):(\d+)", line)
        if not match:
            self.process.kill()
            raise RuntimeError(f"vcsim did not start: {line!r}")
        self.upstream = (match.group(1), int(match.group(2)))
        self.ca_file, cert_file, key_file = make_certificates(scratch / "tls")
        self.proxy = VsphereProxy(self.upstream, self.USER, self.PASSWORD, str(cert_file), str(key_file)).start()
        self.server = f"127.0.0.1:{self.proxy.port}"
        self.expected_snapshots: set[str] = set()  # safehold- snapshots a test made on purpose

    def close(self) -> None:
        self.proxy.stop()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    # -- inventory -------------------------------------------------------------------
    @property
    def admin(self) -> Any:
        return self.proxy.admin

    def all_vms(self) -> list[tuple[Any, dict]]:
        from pyVmomi import vim

        content = self.admin.content
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
        try:
            return [(vm, {"name": vm.name}) for vm in view.view]
        finally:
            view.DestroyView()

    def vm(self, name: str) -> Any:
        vm = self.admin.content.searchIndex.FindByInventoryPath(f"DC0/vm/{name}")
        assert vm is not None, f"no VM {name}"
        return vm

    def disks(self, name: str) -> list[tuple[int, str, int]]:
        """(device key, local flat file, capacity) of each disk of VM ``name``."""
        return self.proxy.local_disks(self.vm(name)._moId)

    def wait(self, task: Any) -> Any:
        return self.proxy.wait_task(task._moId).result

    def resize_disk(self, name: str, size: int) -> str:
        """Grow the VM's first disk to ``size`` bytes (zero-filled); returns its local flat file."""
        from pyVmomi import vim

        vm = self.vm(name)
        disk = next(d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk))
        disk.capacityInKB = size // 1024
        disk.capacityInBytes = size
        change = vim.vm.device.VirtualDeviceSpec(operation="edit", device=disk)
        self.wait(vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[change])))
        path = self.disks(name)[0][1]
        with open(path, "ab") as handle:
            handle.truncate(size)
        return path

    def write(self, name: str, offset: int, data: bytes, disk: int = 0) -> None:
        """A guest write: ``data`` at ``offset`` of the VM's disk number ``disk``."""
        with open(self.disks(name)[disk][1], "r+b") as handle:
            handle.seek(offset)
            handle.write(data)

    def read(self, name: str, disk: int = 0) -> bytes:
        key, path, size = self.disks(name)[disk]
        with open(path, "rb") as handle:
            data = handle.read(size)
        return data + bytes(size - len(data))

    def snapshot_names(self, name: str) -> list[str]:
        from pyVmomi import vmodl

        vm = self.vm(name)
        spec = vmodl.query.PropertyCollector.FilterSpec(
            objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=vm)],
            propSet=[vmodl.query.PropertyCollector.PropertySpec(type=type(vm), pathSet=["snapshot"])])
        result = self.admin.content.propertyCollector.RetrieveContents([spec])
        names: list[str] = []
        for entry in result:
            for prop in entry.propSet or []:
                stack = list(prop.val.rootSnapshotList or [])
                while stack:
                    tree = stack.pop()
                    names.append(tree.name)
                    stack.extend(tree.childSnapshotList or [])
        return names

    def destroy(self, name: str) -> None:
        vm = self.vm(name)
        try:
            self.wait(vm.PowerOffVM_Task())
        except Exception:
            pass
        self.wait(vm.Destroy_Task())

    # -- tags (vAPI REST, straight to vcsim) --------------------------------------------
    def _rest(self, method: str, path: str, body: dict | None = None, token: str | None = None) -> Any:
        import base64
        import http.client
        import json

        headers = {"Content-Type": "application/json"}
        if token:
            headers["vmware-api-session-id"] = token
        else:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{self.USER}:{self.PASSWORD}".encode()).decode()
        connection = http.client.HTTPConnection(*self.upstream, timeout=30)
        try:
            connection.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
            response = connection.getresponse()
            data = response.read()
            assert response.status < 300, (method, path, response.status, data)
            return json.loads(data) if data else None
        finally:
            connection.close()

    def tag(self, category: str, tag: str, *vm_names: str) -> None:
        """Create ``category/tag`` and attach it to the named VMs."""
        token = self._rest("POST", "/rest/com/vmware/cis/session")["value"]
        category_id = self._rest("POST", "/rest/com/vmware/cis/tagging/category", {"create_spec": {
            "name": category, "description": "", "cardinality": "MULTIPLE", "associable_types": []}}, token)["value"]
        tag_id = self._rest("POST", "/rest/com/vmware/cis/tagging/tag", {"create_spec": {
            "name": tag, "description": "", "category_id": category_id}}, token)["value"]
        for name in vm_names:
            self._rest("POST", f"/rest/com/vmware/cis/tagging/tag-association/id:{tag_id}?~action=attach",
                       {"object_id": {"id": self.vm(name)._moId, "type": "VirtualMachine"}}, token)
