"""The "run this PowerShell, get JSON back" seam, and its WinRM implementation.

Errors: a script that fails raises :class:`PowerShellFailed` carrying the
PowerShell error category (``ObjectNotFound``, ``PermissionDenied`` ...) so
the driver can tell "the VM is gone" from "the read was refused"; a session the
host no longer accepts (expired, logged off, shell limits) raises
:class:`~safehold.errors.HyperVSessionExpired`, after which ``reconnect()``
opens a fresh session (cleanup needs one to remove the checkpoint); failing to
open one raises :class:`~safehold.errors.HyperVConnectionFailed`.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from ...errors import HyperVConnectionFailed, HyperVSessionExpired
from .scripts import Script

# System.Management.Automation.ErrorCategory, by value (PSRP sends the number).
ERROR_CATEGORIES = (
    "NotSpecified", "OpenError", "CloseError", "DeviceError", "DeadlockDetected", "InvalidArgument",
    "InvalidData", "InvalidOperation", "InvalidResult", "InvalidType", "MetadataError", "NotImplemented",
    "NotInstalled", "ObjectNotFound", "OperationStopped", "OperationTimeout", "SyntaxError", "ParserError",
    "PermissionDenied", "ResourceBusy", "ResourceExists", "ResourceUnavailable", "ReadError", "WriteError",
    "FromStdErr", "SecurityError", "ProtocolError", "ConnectionError", "AuthenticationError",
    "LimitsExceeded", "QuotaExceeded", "NotEnabled",
)


class PowerShellFailed(Exception):
    """A script ended with a terminating error. ``category`` is an ErrorCategory name,
    ``error_id`` the FullyQualifiedErrorId."""

    def __init__(self, message: str, category: str = "NotSpecified", error_id: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.category = category
        self.error_id = error_id


class PowerShell(Protocol):
    """Contract of the seam.

    ``run(script, **parameters)`` runs one script of :mod:`safehold.platforms.hyperv.scripts` with its
    ``param()`` block bound to ``parameters`` (never interpolated into the text) and returns the
    decoded JSON the script prints (None when it prints nothing). Raises PowerShellFailed for a
    script error and HyperVSessionExpired when the session is no longer valid.
    ``upload(local_path, remote_path)`` copies a local file to the host, replacing it.
    ``reconnect()`` drops the session and opens a new one; ``close()`` ends it. Not thread-safe:
    one caller at a time.
    """

    def run(self, script: Script, **parameters: Any) -> Any: ...

    def upload(self, local_path: str, remote_path: str) -> None: ...

    def reconnect(self) -> None: ...

    def close(self) -> None: ...


class PsrpShell:
    """PowerShell remoting over WinRM (pypsrp). One runspace pool per session, reused for every
    script, so a backup of thousands of reads pays the session set-up once."""

    def __init__(self, host: str, *, port: int | None, username: str | None, password: str | None,
                 ssl: bool, verify_certificate: bool, ca_bundle: str | None, auth: str,
                 operation_timeout: int = 60) -> None:
        # Certificate checking is on unless the configuration turns it off; a CA bundle path
        # replaces the system store (pypsrp takes it through cert_validation).
        validation: bool | str = (ca_bundle or True) if verify_certificate else False
        self._options = dict(port=port, username=username, password=password, ssl=ssl, auth=auth,
                             cert_validation=validation, operation_timeout=operation_timeout)
        self.host = host
        self._client: Any = None
        self._pool: Any = None

    def _open(self) -> None:
        from pypsrp.client import Client
        from pypsrp.powershell import RunspacePool

        try:
            self._client = Client(self.host, **{k: v for k, v in self._options.items() if v is not None})
            self._pool = RunspacePool(self._client.wsman)
            self._pool.open()
        except Exception as exc:  # noqa: BLE001 - DNS, TCP, TLS, logon: all mean "cannot connect"
            self._client = self._pool = None
            raise HyperVConnectionFailed(host=self.host, detail=f"{type(exc).__name__}: {exc}") from exc

    def _session_error(self, exc: Exception) -> HyperVSessionExpired:
        return HyperVSessionExpired(host=self.host, detail=f"{type(exc).__name__}: {exc}")

    def run(self, script: Script, **parameters: Any) -> Any:
        from pypsrp.exceptions import WinRMError
        from pypsrp.powershell import PowerShell as PsrpPipeline

        if self._pool is None:
            self._open()
        pipeline = PsrpPipeline(self._pool)
        pipeline.add_script(script.text)
        if parameters:
            pipeline.add_parameters(parameters)
        try:
            output = pipeline.invoke()
        except WinRMError as exc:
            # A WSMan fault or HTTP 401/500 at this point means the shell or the logon is gone.
            self._pool = None
            raise self._session_error(exc) from exc
        if pipeline.had_errors and pipeline.streams.error:
            # The terminating error (from the pipeline's Failed state) is the last record; earlier
            # ones are non-terminating errors the script chose to continue past.
            record = pipeline.streams.error[-1]
            category = record.category if isinstance(record.category, int) else 0
            raise PowerShellFailed(str(record) or str(record.message), ERROR_CATEGORIES[category] if category < len(ERROR_CATEGORIES)
                                   else "NotSpecified", record.fq_error or "")
        text = "".join(str(line) for line in output).strip()
        return json.loads(text) if text else None

    def upload(self, local_path: str, remote_path: str) -> None:
        from pypsrp.exceptions import AuthenticationError, WinRMError, WinRMTransportError, WSManFaultError

        if self._client is None:
            self._open()
        try:
            self._client.copy(local_path, remote_path)
        except (AuthenticationError, WinRMTransportError, WSManFaultError) as exc:
            raise self._session_error(exc) from exc
        except WinRMError as exc:  # the copy script itself failed (no such folder, disk full, denied)
            raise PowerShellFailed(str(exc), "WriteError") from exc

    def reconnect(self) -> None:
        self.close()
        self._open()

    def close(self) -> None:
        pool, client, self._pool, self._client = self._pool, self._client, None, None
        for thing in (pool, client):
            try:
                if thing is not None:
                    thing.close()
            except Exception:  # noqa: BLE001 - closing a dead session must not hide the real error
                pass
