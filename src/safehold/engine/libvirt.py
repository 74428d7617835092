"""libvirt jobs beyond backup and restore (``engine.restore`` restores a domain's disks): the
checkpoints safehold keeps on a domain."""

from __future__ import annotations


def list_checkpoints(uri: str, domain_name: str) -> list[dict]:
    """The domain's checkpoints, oldest first: name, creation time (ISO 8601, UTC), parent, disks with a bitmap."""
    import xml.etree.ElementTree as ET
    from datetime import datetime, timezone

    from ..platforms.libvirt.connection import connect, lookup_domain

    connection = connect(uri)
    try:
        rows = []
        for checkpoint in lookup_domain(connection, domain_name, uri).listAllCheckpoints():
            root = ET.fromstring(checkpoint.getXMLDesc(0))
            created = int(root.findtext("creationTime", "0"))
            rows.append({
                "name": root.findtext("name"), "created_epoch": created,
                "created": datetime.fromtimestamp(created, timezone.utc).isoformat(),
                "parent": root.findtext("parent/name"),
                "disks": [d.get("name") for d in root.iterfind("disks/disk") if d.get("checkpoint") == "bitmap"],
            })
        return sorted(rows, key=lambda row: (row["created_epoch"], row["name"]))
    finally:
        connection.close()
