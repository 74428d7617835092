"""A loopback WinRM (WS-Management) endpoint speaking the PowerShell Remoting Protocol, in front
of the fake Hyper-V host, so ``PsrpShell`` is tested with the real pypsrp client on the wire.

Real: HTTPS with a certificate the client must trust (a CA file, as ``ca_bundle``), HTTP Basic
logon, the WS-Management shell operations pypsrp uses (Create, Command, Receive, Signal, Delete,
as in [MS-WSMV]) carrying PSRP fragments decoded and answered by ``psrpcore``'s server-side
runspace pool and pipeline ([MS-PSRP]): session capability, runspace pool negotiation, pipeline
creation with the script text and its parameters, output objects, and failed pipeline states
carrying an ErrorRecord with a category and a FullyQualifiedErrorId. An expired session (the
fake's ``expired`` flag) answers HTTP 401 until the client logs on again (a new shell).

Not real: no PowerShell runs. The script a pipeline carries is answered by the fake host by
its ``# safehold:<name>`` line; file copies (pypsrp's ``Client.copy`` script with streamed input)
are not served, so restores are tested against the fake host directly.
"""

from __future__ import annotations

import base64
import datetime
import json
import ssl
import threading
import uuid
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psrpcore
from psrpcore.types import ErrorCategory, ErrorCategoryInfo, ErrorRecord, NETException, PSInvocationState

from safehold.errors import HyperVSessionExpired
from safehold.platforms.hyperv.scripts import Script
from safehold.platforms.hyperv.shell import PowerShellFailed

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsa": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "wsman": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "wst": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "ps": "http://schemas.microsoft.com/powershell",
}
for prefix, uri in NS.items():
    ET.register_namespace(prefix, uri)
DONE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done"
RUNNING = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Running"


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert.pem doubles as the client's CA file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class _Shell:
    def __init__(self) -> None:
        self.pool = psrpcore.ServerRunspacePool()
        self.outgoing: dict[uuid.UUID | None, bytearray] = {}
        self.pipelines: dict[uuid.UUID, psrpcore.ServerPipeline] = {}


class WinRMServer:
    def __init__(self, host, directory: Path, username: str = "svc-backup", password: str = "secret") -> None:
        self.host, self.username, self.password = host, username, password
        self.certificate, key = make_certificate(directory)
        self.shells: dict[str, _Shell] = {}
        self.requests: list[str] = []
        self.errors: list[Exception] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                expected = "Basic " + base64.b64encode(f"{server.username}:{server.password}".encode()).decode()
                if self.headers.get("Authorization") != expected:
                    return self._reply(401, b"")
                if not body:  # pypsrp may probe with an empty POST
                    return self._reply(200, b"")
                try:
                    status, answer = server.handle(body)
                except Exception as exc:  # a harness bug: make it visible to the test, not a hang
                    server.errors.append(exc)
                    status, answer = 500, b""
                self._reply(status, answer)

            def _reply(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/soap+xml;charset=UTF-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.certificate, key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- WS-Management ----------------------------------------------------------------------
    def handle(self, body: bytes) -> tuple[int, bytes]:
        request = ET.fromstring(body)
        action = request.findtext("s:Header/wsa:Action", namespaces=NS) or ""
        message_id = request.findtext("s:Header/wsa:MessageID", namespaces=NS) or ""
        shell_id = next((sel.text for sel in request.iterfind("s:Header/wsman:SelectorSet/wsman:Selector", NS)
                         if sel.get("Name") == "ShellId"), None)
        verb = action.rsplit("/", 1)[-1]
        self.requests.append(verb)
        with self.lock:
            if verb == "Create":
                self.host.reconnect()  # a new logon: the fake's expired session is over
            elif self.host.expired:
                return 401, b""
            try:
                answer = getattr(self, "_" + verb.lower())(request.find("s:Body", NS), shell_id)
            except HyperVSessionExpired:  # the logon expired while this request ran
                return 401, b""
        return 200, self._envelope(action + "Response", message_id, answer)

    @staticmethod
    def _envelope(action: str, relates_to: str, body: ET.Element | list[ET.Element] | None) -> bytes:
        envelope = ET.Element(f"{{{NS['s']}}}Envelope")
        header = ET.SubElement(envelope, f"{{{NS['s']}}}Header")
        ET.SubElement(header, f"{{{NS['wsa']}}}Action").text = action
        ET.SubElement(header, f"{{{NS['wsa']}}}MessageID").text = f"uuid:{uuid.uuid4()}"
        ET.SubElement(header, f"{{{NS['wsa']}}}RelatesTo").text = relates_to
        soap_body = ET.SubElement(envelope, f"{{{NS['s']}}}Body")
        for element in body if isinstance(body, list) else [body] if body is not None else []:
            soap_body.append(element)
        return ET.tostring(envelope, encoding="utf-8")

    def _feed(self, shell: _Shell, data: bytes, pipeline_id: uuid.UUID | None) -> None:
        shell.pool.receive_data(psrpcore.PSRPPayload(data, psrpcore.StreamType.default, pipeline_id))
        while (event := shell.pool.next_event()) is not None:
            if isinstance(event, psrpcore.CreatePipelineEvent):
                self._run_pipeline(shell.pipelines[event.pipeline_id])
        self._drain(shell)

    def _drain(self, shell: _Shell) -> None:
        while (payload := shell.pool.data_to_send()) is not None:
            shell.outgoing.setdefault(payload.pipeline_id, bytearray()).extend(payload.data)

    def _create(self, body: ET.Element, _shell_id: str | None) -> list[ET.Element]:
        shell_id = str(uuid.uuid4()).upper()
        shell = self.shells[shell_id] = _Shell()
        self._feed(shell, base64.b64decode(body.findtext("rsp:Shell/ps:creationXml", namespaces=NS) or ""), None)
        created = ET.Element(f"{{{NS['wst']}}}ResourceCreated")
        reference = ET.SubElement(created, f"{{{NS['wsa']}}}ReferenceParameters")
        selectors = ET.SubElement(reference, f"{{{NS['wsman']}}}SelectorSet")
        ET.SubElement(selectors, f"{{{NS['wsman']}}}Selector", Name="ShellId").text = shell_id
        shell_element = ET.Element(f"{{{NS['rsp']}}}Shell")
        ET.SubElement(shell_element, f"{{{NS['rsp']}}}ShellId").text = shell_id
        return [created, shell_element]

    def _command(self, body: ET.Element, shell_id: str | None) -> ET.Element:
        shell = self.shells[shell_id]
        line = body.find("rsp:CommandLine", NS)
        pipeline_id = uuid.UUID(line.get("CommandId"))
        shell.pipelines[pipeline_id] = psrpcore.ServerPipeline(shell.pool, pipeline_id)
        self._feed(shell, base64.b64decode(line.findtext("rsp:Arguments", namespaces=NS) or ""), pipeline_id)
        response = ET.Element(f"{{{NS['rsp']}}}CommandResponse")
        ET.SubElement(response, f"{{{NS['rsp']}}}CommandId").text = str(pipeline_id).upper()
        return response

    def _send(self, body: ET.Element, shell_id: str | None) -> ET.Element:
        shell = self.shells[shell_id]
        for stream in body.iterfind("rsp:Send/rsp:Stream", NS):
            command = stream.get("CommandId")
            self._feed(shell, base64.b64decode(stream.text or ""), uuid.UUID(command) if command else None)
        return ET.Element(f"{{{NS['rsp']}}}SendResponse")

    def _receive(self, body: ET.Element, shell_id: str | None) -> ET.Element:
        shell = self.shells[shell_id]
        command = body.find("rsp:Receive/rsp:DesiredStream", NS).get("CommandId")
        key = uuid.UUID(command) if command else None
        self._drain(shell)
        data = bytes(shell.outgoing.pop(key, b""))
        response = ET.Element(f"{{{NS['rsp']}}}ReceiveResponse")
        stream = ET.SubElement(response, f"{{{NS['rsp']}}}Stream", Name="stdout")
        if command:
            stream.set("CommandId", command)
            pipeline = shell.pipelines.get(key)
            finished = pipeline is None or pipeline.state != PSInvocationState.Running
            ET.SubElement(response, f"{{{NS['rsp']}}}CommandState", CommandId=command,
                          State=DONE if finished else RUNNING)
        stream.text = base64.b64encode(data).decode()
        return response

    def _signal(self, body: ET.Element, shell_id: str | None) -> ET.Element:
        command = body.find("rsp:Signal", NS).get("CommandId")
        shell = self.shells.get(shell_id)
        if shell is not None and command:
            pipeline = shell.pipelines.pop(uuid.UUID(command), None)
            if pipeline is not None:
                pipeline.close()
        return ET.Element(f"{{{NS['rsp']}}}SignalResponse")

    def _delete(self, _body: ET.Element, shell_id: str | None) -> None:
        self.shells.pop(shell_id, None)
        return None

    # -- PowerShell: the fake host answers the script --------------------------------------
    def _run_pipeline(self, pipeline: psrpcore.ServerPipeline) -> None:
        (command,) = pipeline.metadata.commands
        text = str(command.command_text)
        parameters = {str(name): _plain(value) for name, value in command.parameters}
        pipeline.start()
        try:
            result = self.host.run(Script(text.split("\n", 1)[0].removeprefix("# safehold:"), text), **parameters)
        except PowerShellFailed as exc:
            record = ErrorRecord(Exception=NETException(Message=exc.message),
                                 CategoryInfo=ErrorCategoryInfo(Category=ErrorCategory[exc.category]),
                                 FullyQualifiedErrorId=exc.error_id or "NotSpecified")
            pipeline._change_state(PSInvocationState.Failed, error=record)
            return
        if result is not None:
            pipeline.write_output(json.dumps(result))
        pipeline.complete()


def _plain(value):
    """psrpcore's deserialised PS types as plain Python values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return str(value)
    return value
