"""A TLS front for vcsim that adds what vcsim 0.24 lacks, and injects faults.

    driver ──TLS (test CA)──► VsphereProxy ──HTTP──► vcsim

Everything is forwarded unchanged except:
- ``CreateSnapshot_Task``: before vcsim makes the snapshot, each disk of the VM
  is recorded by the ``ChangeTracker`` (vsphere_cbt.py) under a new change id,
  which is then reported as ``backing.changeId`` of that snapshot's disks in
  property-collector answers (vcsim leaves it unset);
- ``QueryChangedDiskAreas``: answered from the tracker, with vSphere's faults
  for a VM without CBT and an unknown change id;
- fault injection for the tests: refuse datastore reads (``refuse_reads``),
  run a callback on reads (``on_read``: e.g. delete the VM mid-backup),
  expire every session issued so far (``expire_sessions``), report VMware
  Tools as running (``tools_running``) and fail quiesced snapshots
  (``fail_quiesce``).
The harness records local disk files directly: vcsim's datastores are local
directories (``summary.url``). Tested through test_vmware_source.py, whose
full → change → incremental → restore round trips compare bytes.
"""

from __future__ import annotations

import http.client
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from xml.sax.saxutils import escape

from vsphere_cbt import ChangeTracker, UnknownChangeId

_METHOD = re.compile(rb"<(?:\w+:)?Body[^>]*>\s*<(\w+)")
_THIS = re.compile(rb"<_this[^>]*>([^<]+)</_this>")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "te", "upgrade"}

ENVELOPE = ('<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
            'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>{}</soapenv:Body></soapenv:Envelope>')


def soap_fault(fault_type: str, message: str, fields: str = "") -> bytes:
    body = (f"<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>{escape(message)}</faultstring>"
            f'<detail><{fault_type}Fault xmlns="urn:vim25" xsi:type="{fault_type}">{fields}</{fault_type}Fault>'
            "</detail></soapenv:Fault>")
    return ENVELOPE.format(body).encode()


def _field(body: bytes, name: str) -> str | None:
    match = re.search(rb"<" + name.encode() + rb"(?:\s[^>]*)?>([^<]*)</" + name.encode() + rb">", body)
    return match.group(1).decode() if match else None


class VsphereProxy:
    def __init__(self, upstream: tuple[str, int], user: str, password: str, cert_file: str, key_file: str,
                 tracker: ChangeTracker | None = None) -> None:
        import ssl

        self.upstream = upstream
        self.user, self.password = user, password
        self.tracker = tracker or ChangeTracker()
        self.snapshot_change_ids: dict[str, dict[int, str]] = {}  # snapshot id -> device key -> change id
        self.refuse_reads: Callable[[str, str], int | None] | None = None
        self.on_read: Callable[[str, str], None] | None = None
        self.tools_running = False
        self.fail_quiesce = False
        self.on_call: Callable[[str], None] | None = None  # called with each SOAP method name before it runs
        self.expired: set[str] = set()
        self.cookies_seen: set[str] = set()
        self.snapshot_requests: list[str] = []  # bodies of CreateSnapshot_Task calls
        self.harness_seconds = 0.0  # time spent emulating CBT (recording disks, answering queries)
        self.calls: list[str] = []  # SOAP method names and 'GET path' / 'PUT path', in order
        self.lock = threading.Lock()
        self._admin = None
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="vsphere-proxy", daemon=True)

    def start(self) -> "VsphereProxy":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._admin is not None:
            try:
                self._admin.content.sessionManager.Logout()
            except Exception:
                pass

    def expire_sessions(self) -> None:
        """Every session issued so far now gets NotAuthenticated (SOAP) or 401 (datastore HTTP)."""
        with self.lock:
            self.expired |= self.cookies_seen

    # -- the harness's own connection to vcsim ------------------------------------
    @property
    def admin(self):
        from pyVim.connect import SmartConnect

        if self._admin is None:
            self._admin = SmartConnect(protocol="http", host=self.upstream[0], port=self.upstream[1],
                                       user=self.user, pwd=self.password)
        return self._admin

    def _vm(self, moid: str):
        from pyVmomi import vim

        return vim.VirtualMachine(moid, self.admin._stub)

    def local_disks(self, vm_id: str) -> list[tuple[int, str, int]]:
        """(device key, local path of the flat file, capacity in bytes) of each disk of a VM."""
        from pyVmomi import vim

        vm = self._vm(vm_id)
        result = []
        for device in vm.config.hardware.device:
            if isinstance(device, vim.vm.device.VirtualDisk):
                match = re.match(r"\[([^\]]+)\]\s*(.*)$", device.backing.fileName)
                datastore = next(ds for ds in vm.datastore if ds.name == match.group(1))
                directory = datastore.summary.url
                path = match.group(2)
                flat = path[:-5] + "-flat.vmdk" if path.endswith(".vmdk") else path
                size = device.capacityInBytes or device.capacityInKB * 1024
                result.append((device.key, f"{directory.rstrip('/')}/{flat}", size))
        return result

    def cbt_enabled(self, vm_id: str) -> bool:
        from pyVmomi import vmodl

        vm = self._vm(vm_id)
        spec = vmodl.query.PropertyCollector.FilterSpec(
            objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=vm)],
            propSet=[vmodl.query.PropertyCollector.PropertySpec(type=type(vm), pathSet=["config.changeTrackingEnabled"])])
        result = self.admin.content.propertyCollector.RetrieveContents([spec])
        return any(prop.val for entry in result for prop in entry.propSet or [])

    def wait_task(self, task_id: str):
        from pyVmomi import vim

        task = vim.Task(task_id, self.admin._stub)
        for _ in range(600):
            info = task.info
            if info.state in ("success", "error"):
                return info
            time.sleep(0.02)
        raise TimeoutError(task_id)

    # -- SOAP interception ---------------------------------------------------------
    def before_soap(self, method: str, body: bytes) -> tuple[bytes, dict] | None:
        """Answer a call here (returns the response body), or None to forward it."""
        if method == "CreateSnapshot_Task":
            self.snapshot_requests.append(body.decode())
        if method == "CreateSnapshot_Task" and self.fail_quiesce and _field(body, "quiesce") == "true":
            return soap_fault("ApplicationQuiesceFault", "Quiescing the guest file system failed (injected)"), {}
        if method == "QueryChangedDiskAreas":
            started = time.monotonic()
            try:
                return self.query_changed_disk_areas(body), {}
            finally:
                self.harness_seconds += time.monotonic() - started
        return None

    def query_changed_disk_areas(self, body: bytes) -> bytes:
        vm_id = _THIS.search(body).group(1).decode()
        snapshot_id, key = _field(body, "snapshot"), int(_field(body, "deviceKey"))
        start, since = int(_field(body, "startOffset")), _field(body, "changeId")
        if not self.cbt_enabled(vm_id):
            return soap_fault("FileFault", "Change tracking is not active on this virtual machine (emulated)",
                              "<file>disk</file>")
        at = self.snapshot_change_ids.get(snapshot_id or "", {}).get(key)
        if at is None:
            return soap_fault("InvalidArgument", f"no disk {key} in snapshot {snapshot_id}",
                              "<invalidProperty>deviceKey</invalidProperty>")
        try:
            info = self.tracker.changed_areas(at, since, start)
        except (UnknownChangeId, ValueError) as exc:
            return soap_fault("InvalidArgument", f"invalid change id or offset: {exc}",
                              "<invalidProperty>changeId</invalidProperty>")
        areas = "".join(f"<changedArea><start>{s}</start><length>{n}</length></changedArea>" for s, n in info.areas)
        result = (f'<QueryChangedDiskAreasResponse xmlns="urn:vim25"><returnval><startOffset>{info.start_offset}'
                  f"</startOffset><length>{info.length}</length>{areas}</returnval></QueryChangedDiskAreasResponse>")
        return ENVELOPE.format(result).encode()

    def around_snapshot(self, body: bytes, forward: Callable[[], tuple[int, list, bytes]]) -> tuple[int, list, bytes]:
        vm_id = _THIS.search(body).group(1).decode()
        started = time.monotonic()
        recorded = {key: self.tracker.record(f"{vm_id}:{key}", path, size)
                    for key, path, size in self.local_disks(vm_id)}
        self.harness_seconds += time.monotonic() - started
        status, headers, response = forward()
        task = re.search(rb"<returnval[^>]*>([^<]+)</returnval>", response)
        if status == 200 and task:
            info = self.wait_task(task.group(1).decode())
            if info.state == "success":
                self.snapshot_change_ids[info.result._moId] = recorded
        return status, headers, response

    def rewrite(self, body: bytes) -> bytes:
        """Give snapshot disks their change ids; optionally report VMware Tools as running."""
        if self.tools_running:
            body = body.replace(b">guestToolsNotRunning<", b">guestToolsRunning<")
        if b'type="VirtualMachineSnapshot"' not in body or not self.snapshot_change_ids:
            return body

        def one_object(match: re.Match) -> bytes:
            ids = self.snapshot_change_ids.get(match.group(1).decode())
            if not ids:
                return match.group(0)

            def one_device(device: re.Match) -> bytes:
                text = device.group(0)
                key = re.search(rb"<key>(-?\d+)</key>", text)
                if b'type="VirtualDisk"' not in text[:80] or not key or int(key.group(1)) not in ids:
                    return text
                change = f"<changeId>{ids[int(key.group(1))]}</changeId></backing>".encode()
                return text.replace(b"</backing>", change, 1)

            return re.sub(rb"<VirtualDevice [^>]*>.*?</VirtualDevice>", one_device, match.group(0), flags=re.S)

        return re.sub(rb'<obj type="VirtualMachineSnapshot">([^<]+)</obj>.*?</objects>', one_object, body, flags=re.S)


class _Handler(BaseHTTPRequestHandler):
    owner: VsphereProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _cookie(self) -> str:
        return (self.headers.get("Cookie") or "").split(";")[0].strip()

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _forward(self, body: bytes | None) -> tuple[int, list, bytes]:
        connection = http.client.HTTPConnection(*self.owner.upstream, timeout=120)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP and k.lower() != "host"}
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_POST(self) -> None:
        owner = self.owner
        body = self._body()
        match = _METHOD.search(body)
        method = match.group(1).decode() if match else "?"
        owner.calls.append(method)
        if owner.on_call is not None:
            owner.on_call(method)
        cookie = self._cookie()
        if cookie and cookie in owner.expired:
            self._send(500, [("Content-Type", "text/xml")],
                       soap_fault("NotAuthenticated", "The session is not authenticated (expired, injected)",
                                  '<object type="SessionManager">SessionManager</object><privilegeId>System.View</privilegeId>'))
            return
        answer = owner.before_soap(method, body)
        if answer is not None:
            status = 500 if b"<soapenv:Fault>" in answer[0] else 200
            self._send(status, [("Content-Type", "text/xml; charset=utf-8")], answer[0])
            return
        if method == "CreateSnapshot_Task":
            status, headers, response = owner.around_snapshot(body, lambda: self._forward(body))
        else:
            status, headers, response = self._forward(body)
        for name, value in headers:
            if name.lower() == "set-cookie":
                with owner.lock:
                    owner.cookies_seen.add(value.split(";")[0].strip())
        if cookie:
            with owner.lock:
                owner.cookies_seen.add(cookie)
        self._send(status, headers, owner.rewrite(response))

    def do_GET(self) -> None:
        owner = self.owner
        owner.calls.append(f"GET {self.path}")
        if self.path.startswith("/folder/"):
            range_header = self.headers.get("Range", "")
            if owner.on_read is not None:
                owner.on_read(self.path, range_header)
            if self._cookie() in owner.expired:
                self._send(401, [("Content-Type", "text/plain")], b"session expired (injected)\n")
                return
            refusal = owner.refuse_reads(self.path, range_header) if owner.refuse_reads else None
            if refusal:
                self._send(refusal, [("Content-Type", "text/plain")], b"datastore read refused (injected)\n")
                return
        self._send(*self._forward(None))

    def do_PUT(self) -> None:
        self.owner.calls.append(f"PUT {self.path}")
        if self._cookie() in self.owner.expired:
            self._body()
            self._send(401, [("Content-Type", "text/plain")], b"session expired (injected)\n")
            return
        self._send(*self._forward(self._body()))

    def do_DELETE(self) -> None:
        self._send(*self._forward(None))
