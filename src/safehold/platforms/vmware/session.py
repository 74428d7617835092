"""A vSphere session: login over TLS, property reads, task waits, re-login.

Certificate checking is on unless the configuration says ``insecure: true``;
``ca_file`` names the CA that signed the vCenter certificate when it is not in
the system store. Properties are read through the PropertyCollector, never
through pyVmomi's lazy attribute ``Fetch``: an unset property (``vm.snapshot``
on a VM without snapshots) then simply comes back absent, instead of raising
(and, against vcsim, dropping the connection). Tasks are polled through the
same collector because pyVmomi's ``WaitForTask`` mishandles snapshot tasks on
vcsim; both are equally right against a real vCenter.
"""

from __future__ import annotations

import os
import ssl
import time
from typing import Any

from ...errors import SafeholdError, VSphereConnectFailed

TASK_TIMEOUT = 3600.0


def split_server(server: str) -> tuple[str, int]:
    """'vcenter.example.com' -> (host, 443); 'host:8443' -> (host, 8443); '[::1]:443' works too."""
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else 443
    host, _, port = server.rpartition(":") if server.count(":") == 1 else (server, "", "")
    return (host, int(port)) if port else (server, 443)


def ssl_context(insecure: bool, ca_file: str | None) -> ssl.SSLContext:
    if insecure:
        # Only when the configuration says so (a lab vCenter with a self-signed certificate).
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=ca_file)


def is_not_authenticated(exc: BaseException) -> bool:
    from pyVmomi import vim

    return isinstance(exc, vim.fault.NotAuthenticated)


class Session:
    """One logged-in connection to vCenter or ESXi. Not thread-safe: one per job."""

    def __init__(self, server: str, user: str, password: str, *, insecure: bool = False,
                 ca_file: str | None = None) -> None:
        self.server = server
        self.host, self.port = split_server(server)
        self.user = user
        self._password = password
        self.insecure = insecure
        self.ca_file = ca_file
        self.context = ssl_context(insecure, ca_file)
        self.instance: Any = None
        self.login()

    # -- connection ----------------------------------------------------------------
    def login(self) -> None:
        from pyVim.connect import SmartConnect
        from pyVmomi import vim

        try:
            self.instance = SmartConnect(host=self.host, port=self.port, user=self.user, pwd=self._password,
                                         sslContext=self.context)
        except ssl.SSLCertVerificationError as exc:
            raise VSphereConnectFailed(server=self.server, detail=f"certificate not trusted ({exc.verify_message})",
                                       ) from None
        except ssl.SSLError as exc:
            raise VSphereConnectFailed(server=self.server, detail=f"TLS failed: {exc}") from None
        except vim.fault.InvalidLogin:
            raise VSphereConnectFailed(server=self.server, detail=f"user {self.user!r}: wrong user name or password") from None
        except OSError as exc:
            raise VSphereConnectFailed(server=self.server, detail=exc.strerror or str(exc)) from None
        except Exception as exc:  # pyVmomi raises assorted types for a server that is not vSphere
            if isinstance(exc, SafeholdError):
                raise
            raise VSphereConnectFailed(server=self.server, detail=f"{type(exc).__name__}: {exc}") from None
        self.content = self.instance.RetrieveContent()

    def relogin(self) -> None:
        """A new session after the old one expired (used to clean up after a long read)."""
        self.login()

    def logout(self) -> None:
        if self.instance is None:
            return
        try:
            self.instance.content.sessionManager.Logout()
        except Exception:  # an expired or dropped session needs no logout
            pass
        self.instance = None

    @property
    def cookie(self) -> str:
        """The session cookie for datastore HTTP access ('vmware_soap_session=...')."""
        return self.instance._stub.cookie.split(";")[0].strip()

    def http_connection(self, timeout: float = 300.0):
        import http.client

        return http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=timeout)

    # -- reading -------------------------------------------------------------------
    def properties(self, objects: list[Any], paths: list[str]) -> list[dict[str, Any]]:
        """The given properties of each object, in order; unset ones are absent from its dict.
        A deleted object raises ``vmodl.fault.ManagedObjectNotFound``."""
        from pyVmomi import vmodl

        collector = self.instance.content.propertyCollector
        spec = vmodl.query.PropertyCollector.FilterSpec(
            objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=obj, skip=False) for obj in objects],
            propSet=[vmodl.query.PropertyCollector.PropertySpec(type=kind, pathSet=paths, all=False)
                     for kind in _distinct_types(objects)],
        )
        by_id: dict[str, dict[str, Any]] = {}
        result = collector.RetrievePropertiesEx([spec], vmodl.query.PropertyCollector.RetrieveOptions())
        while result is not None:
            for entry in result.objects:
                missing = [m for m in (entry.missingSet or []) if isinstance(m.fault, vmodl.fault.ManagedObjectNotFound)]
                if missing:
                    raise missing[0].fault
                by_id[entry.obj._moId] = {prop.name: prop.val for prop in entry.propSet}
            result = collector.ContinueRetrievePropertiesEx(result.token) if result.token else None
        return [by_id.get(obj._moId, {}) for obj in objects]

    def get(self, obj: Any, path: str, default: Any = None) -> Any:
        return self.properties([obj], [path])[0].get(path, default)

    def wait(self, task: Any, timeout: float = TASK_TIMEOUT) -> Any:
        """Wait for a task; returns its result, raises its fault."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            # info.state, not info: vcsim names a snapshot (not a ManagedEntity) as a snapshot
            # task's entity, and pyVmomi then refuses the whole info object.
            state = str(self.get(task, "info.state"))
            if state == "success":
                return self.get(task, "info.result")
            if state == "error":
                raise self.get(task, "info.error")
            if time.monotonic() > deadline:
                raise TimeoutError(f"task {task._moId} did not finish in {timeout:.0f}s")
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def _distinct_types(objects: list[Any]) -> list[type]:
    seen: list[type] = []
    for obj in objects:
        if type(obj) not in seen:
            seen.append(type(obj))
    return seen


def read_password(server: str, password_env: str, password_file: str | None) -> str:
    """The vSphere password from source.password_file or the variable source.password_env names."""
    if password_file:
        try:
            with open(password_file, encoding="utf-8") as handle:
                password = handle.read().rstrip("\r\n")
        except OSError as exc:
            raise VSphereConnectFailed(server=server, detail=f"cannot read source.password_file {password_file}: "
                                       f"{exc.strerror or exc}") from None
        if not password:
            raise VSphereConnectFailed(server=server, detail=f"source.password_file {password_file} is empty")
        return password
    password = os.environ.get(password_env)
    if not password:
        raise VSphereConnectFailed(server=server, detail=f"no password: the variable {password_env} "
                                   "(source.password_env) is not set; export it or set source.password_file")
    return password
