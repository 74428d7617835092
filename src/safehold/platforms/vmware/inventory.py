"""Finding the VMs a target selects: by name (globs allowed), by folder, by tag.

A VM is selected when it matches any of the three. Templates are never
selected. Names and folders come from the SOAP inventory; tags live in the
vAPI (REST) tagging service, reached with the same credentials and TLS
settings (``/rest/com/vmware/cis/...``, the API vCenter 6.5 and later and
vcsim serve).
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from typing import Any

from ...errors import VMNotFound, VSphereConnectFailed
from .session import Session


@dataclass
class Selection:
    vms: list[str]
    folder: str | None
    tags: list[str]

    def describe(self) -> str:
        parts = []
        if self.vms:
            parts.append("names " + ", ".join(self.vms))
        if self.folder:
            parts.append(f"folder {self.folder}")
        if self.tags:
            parts.append("tags " + ", ".join(self.tags))
        return " or ".join(parts) or "(nothing selected)"


def all_vms(session: Session) -> list[tuple[Any, dict[str, Any]]]:
    """Every VM with its name, template flag and instance UUID."""
    from pyVmomi import vim

    content = session.content
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    try:
        vms = list(view.view)
    finally:
        view.DestroyView()
    if not vms:
        return []
    props = session.properties(vms, ["name", "config.template", "config.instanceUuid"])
    return list(zip(vms, props))


def folder_vms(session: Session, path: str) -> list[Any]:
    """VMs anywhere below the folder at inventory path ``path`` (e.g. 'DC0/vm/prod')."""
    from pyVmomi import vim

    folder = session.content.searchIndex.FindByInventoryPath(path.strip("/"))
    if folder is None or not isinstance(folder, vim.Folder):
        raise VMNotFound(server=session.server, selection=f"folder {path} (no such folder)")
    view = session.content.viewManager.CreateContainerView(folder, [vim.VirtualMachine], True)
    try:
        return list(view.view)
    finally:
        view.DestroyView()


class TagClient:
    """Just enough of the vAPI tagging REST API to list the VMs carrying a tag."""

    def __init__(self, session: Session, password: str) -> None:
        import base64

        self.session = session
        self.connection = session.http_connection(timeout=60)
        credentials = base64.b64encode(f"{session.user}:{password}".encode()).decode()
        reply = self._call("POST", "/rest/com/vmware/cis/session", {"Authorization": f"Basic {credentials}"})
        self.token = reply["value"]

    def _call(self, method: str, path: str, headers: dict[str, str] | None = None) -> Any:
        headers = dict(headers or {})
        if getattr(self, "token", None):
            headers["vmware-api-session-id"] = self.token
        # POST actions carry an empty JSON object: vCenter accepts it, vcsim requires a body.
        body = b"{}" if method == "POST" else None
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            self.connection.request(method, path, body=body, headers=headers)
            response = self.connection.getresponse()
            body = response.read()
        except OSError as exc:
            raise VSphereConnectFailed(server=self.session.server, detail=f"tagging service: {exc}") from None
        if response.status >= 300:
            raise VSphereConnectFailed(server=self.session.server,
                                       detail=f"tagging service: {method} {path} -> HTTP {response.status}")
        return json.loads(body) if body else None

    def tagged_vm_ids(self, wanted: list[str]) -> dict[str, set[str]]:
        """tag -> managed object ids of the VMs carrying it. A tag is 'name' or 'category/name'."""
        tags = []
        for tag_id in self._call("GET", "/rest/com/vmware/cis/tagging/tag")["value"]:
            tag = self._call("GET", f"/rest/com/vmware/cis/tagging/tag/id:{tag_id}")["value"]
            tags.append(tag)
        categories: dict[str, str] = {}
        result: dict[str, set[str]] = {name: set() for name in wanted}
        for tag in tags:
            category_id = tag["category_id"]
            if category_id not in categories:
                category = self._call("GET", f"/rest/com/vmware/cis/tagging/category/id:{category_id}")["value"]
                categories[category_id] = category["name"]
            for name in wanted:
                if name in (tag["name"], f"{categories[category_id]}/{tag['name']}"):
                    attached = self._call(
                        "POST", f"/rest/com/vmware/cis/tagging/tag-association/id:{tag['id']}?~action=list-attached-objects")
                    result[name] |= {obj["id"] for obj in attached["value"] if obj["type"] == "VirtualMachine"}
        return result

    def close(self) -> None:
        try:
            self._call("DELETE", "/rest/com/vmware/cis/session")
        except VSphereConnectFailed:
            pass
        self.connection.close()


def select_vms(session: Session, selection: Selection, password: str) -> list[tuple[Any, dict[str, Any]]]:
    """The selected VMs (in inventory order) with their name and instance UUID.

    A name without wildcards that matches no VM, a folder without VMs or a tag on no VM is an
    error: a VM that silently drops out of its backups is worse than a failed job."""
    inventory = [(vm, props) for vm, props in all_vms(session) if not props.get("config.template")]
    chosen: set[str] = set()
    for pattern in selection.vms:
        matches = {vm._moId for vm, props in inventory if fnmatch.fnmatchcase(props.get("name", ""), pattern)}
        if not matches:
            raise VMNotFound(server=session.server, selection=f"name {pattern}")
        chosen |= matches
    if selection.folder:
        matches = {vm._moId for vm in folder_vms(session, selection.folder)}
        if not matches:
            raise VMNotFound(server=session.server, selection=f"folder {selection.folder} (it holds no VM)")
        chosen |= matches
    if selection.tags:
        client = TagClient(session, password)
        try:
            for tag, ids in client.tagged_vm_ids(selection.tags).items():
                if not ids:
                    raise VMNotFound(server=session.server, selection=f"tag {tag} (no VM carries it)")
                chosen |= ids
        finally:
            client.close()
    selected = [(vm, props) for vm, props in inventory if vm._moId in chosen]
    if not selected:
        raise VMNotFound(server=session.server, selection=selection.describe())
    return selected


def datacenter_path(session: Session, obj: Any) -> str:
    """Inventory path of the datacenter holding ``obj`` ('DC0' or 'Folder/DC0'): the dcPath of datastore URLs."""
    from pyVmomi import vim

    current = obj
    while current is not None and not isinstance(current, vim.Datacenter):
        current = session.get(current, "parent")
    if current is None:
        raise VMNotFound(server=session.server, selection=f"{obj._moId} (not in a datacenter)")
    names = []
    while current is not None and current != session.content.rootFolder:
        names.append(session.get(current, "name"))
        current = session.get(current, "parent")
    return "/".join(reversed(names))
