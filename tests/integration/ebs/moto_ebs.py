"""A moto server that follows AWS's documented EBS behaviour where moto 5.2 does not.

Run as a program (``python moto_ebs.py --port-file F``): it starts moto's own
server on 127.0.0.1 in this process, after patching moto so that:

* volumes hold data: every volume has a sparse map of 512 KiB blocks, written by
  tests through ``POST /_harness/volumes/<id>/write?offset=N`` (moto's volumes
  hold nothing, and moto's snapshots made through EC2 hold no blocks);
* ``CreateSnapshot`` copies the volume's blocks into the snapshot,
  ``CopySnapshot`` copies them across regions, ``CreateVolume`` from a snapshot
  fills the new volume with them;
* the EBS direct APIs report ``BlockSize`` 524288, page with ``MaxResults``/
  ``NextToken``/``StartingBlockIndex``, honour ``ParentSnapshotId``, answer
  ``ListChangedBlocks`` by comparing block tokens (a block written since the
  earlier snapshot has a new token, as on AWS), require the ``BlockToken``,
  verify SHA-256 checksums and ``DataLength`` on ``PutSnapshotBlock``, check
  ``ChangedBlocksCount`` on ``CompleteSnapshot``, and refuse reads of a snapshot
  that is not completed;
* ``AttachVolume`` refuses a device name already in use on the instance and a
  volume already attached (moto accepts both);
* ``RegisterImage`` from EBS snapshots keeps what AWS keeps (architecture,
  root device, boot mode, ENA flag, the block-device mappings, each snapshot
  checked to exist, its TagSpecifications; moto keeps only the name), and ``RunInstances`` of such an
  AMI makes the instance's volumes from the mapped snapshots (with their blocks)
  where moto gives every instance an empty 8 GiB /dev/sda1;
* snapshots (from CreateSnapshot, CopySnapshot and the direct APIs'
  CompleteSnapshot) can stay ``pending`` for a while (``POST /_harness/config``
  ``{"pending_seconds": S}``); moto completes them at once.

Test-only endpoints (not AWS): ``/_harness/volumes/<id>/write``,
``/_harness/volumes/<id>/blocks`` (SHA-256 of each non-zero block),
``/_harness/config``, ``/_harness/corrupt`` (serve one block's data with a
checksum that does not match), ``/_harness/stats`` (GetSnapshotBlock calls and
bytes served, to measure what a backup reads). Everything is checked by
``test_moto_ebs.py``; ``docs/testing.md`` lists each gap and how it is covered.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import threading
import time
import uuid
from typing import Any
from urllib.parse import parse_qs

BLOCK_SIZE = 512 * 1024
GIB = 1024 * 1024 * 1024

# volume or snapshot id -> {block index: (data, token)}; ids are unique across regions.
VOLUME_BLOCKS: dict[str, dict[int, tuple[bytes, str]]] = {}
SNAPSHOT_BLOCKS: dict[str, dict[int, tuple[bytes, str]]] = {}
SETTINGS: dict[str, Any] = {"pending_seconds": 0.0}
PENDING_UNTIL: dict[str, float] = {}  # snapshot id -> time it completes
CORRUPT: set[tuple[str, int]] = set()
STATS = {"get_snapshot_block": 0, "get_snapshot_block_bytes": 0, "put_snapshot_block": 0,
         "list_snapshot_blocks": 0, "list_changed_blocks": 0}
DIRECT_SNAPSHOTS: dict[str, dict] = {}  # snapshots started with StartSnapshot: {"status", "size", "written"}
LOCK = threading.RLock()


def new_token() -> str:
    return base64.b64encode(uuid.uuid4().bytes + os.urandom(8)).decode()


def checksum(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def write_volume(volume_id: str, offset: int, data: bytes) -> None:
    """Write ``data`` at ``offset``: every block touched gets a new token (AWS: a new block version)."""
    with LOCK:
        blocks = VOLUME_BLOCKS.setdefault(volume_id, {})
        position = 0
        while position < len(data):
            index, inside = divmod(offset + position, BLOCK_SIZE)
            piece = data[position : position + BLOCK_SIZE - inside]
            old = blocks.get(index, (bytes(BLOCK_SIZE), ""))[0]
            block = old[:inside] + piece + old[inside + len(piece) :]
            blocks[index] = (block, new_token())
            position += len(piece)


def _service_error(code: str, message: str) -> Exception:
    from moto.core.exceptions import ServiceException

    # Defined here, outside moto's packages, so moto serializes it with the EBS model
    # of the request (it looks an exception's service up by its module name).
    class HarnessError(ServiceException):
        pass

    return HarnessError(code, message)


def _validation(message: str) -> Exception:
    return _service_error("ValidationException", message)


def _not_found(message: str) -> Exception:
    return _service_error("ResourceNotFoundException", message)


def _ec2_error(code: str, message: str):
    from moto.ec2.exceptions import EC2ClientError

    return EC2ClientError(code, message)


# --- EC2 -----------------------------------------------------------------------------------


def _refresh_pending(snapshots) -> None:
    now = time.monotonic()
    for snapshot in snapshots:
        until = PENDING_UNTIL.get(snapshot.id)
        if until is not None and now >= until:
            snapshot.status = "completed"
            PENDING_UNTIL.pop(snapshot.id, None)


def hold_pending(snapshot) -> None:
    """Keep a new snapshot ``pending`` for the configured time, as AWS does while it copies the data."""
    if SETTINGS["pending_seconds"] > 0:
        snapshot.status = "pending"
        PENDING_UNTIL[snapshot.id] = time.monotonic() + SETTINGS["pending_seconds"]


def _patch_ec2() -> None:
    from moto.ec2.models.elastic_block_store import EBSBackend as Ec2Ebs

    create_snapshot = Ec2Ebs.create_snapshot
    copy_snapshot = Ec2Ebs.copy_snapshot
    create_volume = Ec2Ebs.create_volume
    describe_snapshots = Ec2Ebs.describe_snapshots
    delete_snapshot = Ec2Ebs.delete_snapshot
    attach_volume = Ec2Ebs.attach_volume
    get_snapshot = Ec2Ebs.get_snapshot

    def patched_create_snapshot(self, volume_id, description, owner_id=None, from_ami=None):
        snapshot = create_snapshot(self, volume_id, description, owner_id, from_ami)
        with LOCK:
            SNAPSHOT_BLOCKS[snapshot.id] = dict(VOLUME_BLOCKS.get(volume_id, {}))
        hold_pending(snapshot)
        return snapshot

    def patched_copy_snapshot(self, source_snapshot_id, source_region, description, kms_key_id):
        from moto.ec2.models import ec2_backends

        source = ec2_backends[self.account_id][source_region].get_snapshot(source_snapshot_id)
        _refresh_pending([source])
        if source.status != "completed":
            # AWS copies only completed snapshots.
            raise _ec2_error("IncorrectState", f"Snapshot '{source_snapshot_id}' is not 'completed'.")
        snapshot = copy_snapshot(self, source_snapshot_id, source_region, description, kms_key_id)
        with LOCK:
            SNAPSHOT_BLOCKS[snapshot.id] = dict(SNAPSHOT_BLOCKS.get(source_snapshot_id, {}))
        hold_pending(snapshot)
        return snapshot

    def patched_create_volume(self, size, zone_name, snapshot_id=None, *args, **kwargs):
        if snapshot_id:
            snapshot = get_snapshot(self, snapshot_id)
            _refresh_pending([snapshot])
            if snapshot.status != "completed":
                raise _ec2_error("IncorrectState", f"Snapshot '{snapshot_id}' is not 'completed'.")
        volume = create_volume(self, size, zone_name, snapshot_id, *args, **kwargs)
        if snapshot_id:
            with LOCK:
                VOLUME_BLOCKS[volume.id] = dict(SNAPSHOT_BLOCKS.get(snapshot_id, {}))
        return volume

    def patched_describe_snapshots(self, snapshot_ids=None, filters=None):
        _refresh_pending(self.snapshots.values())
        return describe_snapshots(self, snapshot_ids, filters)

    def patched_delete_snapshot(self, snapshot_id):
        snapshot = delete_snapshot(self, snapshot_id)
        with LOCK:
            SNAPSHOT_BLOCKS.pop(snapshot_id, None)
        return snapshot

    def patched_attach_volume(self, volume_id, instance_id, device_path, delete_on_termination=False):
        volume = self.get_volume(volume_id)
        instance = self.get_instance(instance_id)
        if volume.attachment is not None and volume.attachment.status == "attached":
            raise _ec2_error("VolumeInUse", f"vol '{volume_id}' is already attached to an instance")
        if device_path in instance.block_device_mapping:
            raise _ec2_error("InvalidParameterValue", f"Attachment point {device_path} is already in use")
        if volume.zone.name != instance.placement.zone:
            raise _ec2_error("InvalidVolume.ZoneMismatch",
                             f"The volume '{volume_id}' is not in the same availability zone as instance "
                             f"'{instance_id}'")
        return attach_volume(self, volume_id, instance_id, device_path, delete_on_termination)

    Ec2Ebs.create_snapshot = patched_create_snapshot
    Ec2Ebs.copy_snapshot = patched_copy_snapshot
    Ec2Ebs.create_volume = patched_create_volume
    Ec2Ebs.describe_snapshots = patched_describe_snapshots
    Ec2Ebs.delete_snapshot = patched_delete_snapshot
    Ec2Ebs.attach_volume = patched_attach_volume


# --- AMIs from EBS snapshots -----------------------------------------------------------------


def _patch_images() -> None:
    from moto.core.responses import ActionResult
    from moto.ec2.models.amis import Ami
    from moto.ec2.models.instances import InstanceBackend
    from moto.ec2.responses.amis import AmisResponse

    original_mappings = Ami.block_device_mappings

    def block_device_mappings(self) -> list:
        mappings = getattr(self, "safehold_mappings", None)
        return mappings if mappings is not None else original_mappings.fget(self)

    def register_image(self) -> ActionResult:
        self.error_on_dryrun()
        mappings = self._get_param("BlockDeviceMappings", [])
        root = self._get_param("RootDeviceName")
        if not mappings:
            image = self.ec2_backend.register_image(self._get_param("Name"), self._get_param("Description", ""))
            return ActionResult({"ImageId": image.id})
        kept = []
        for mapping in mappings:
            ebs = mapping.get("Ebs") or {}
            snapshot_id = ebs.get("SnapshotId")
            if snapshot_id:
                snapshot = self.ec2_backend.get_snapshot(snapshot_id)  # InvalidSnapshot.NotFound as on AWS
                _refresh_pending([snapshot])
                if snapshot.status != "completed":
                    raise _ec2_error("IncorrectState", f"Snapshot '{snapshot_id}' is not 'completed'.")
                size = ebs.get("VolumeSize") or snapshot.volume.size
            else:
                size = ebs.get("VolumeSize") or 8
            delete = ebs.get("DeleteOnTermination", True)
            kept.append({"DeviceName": mapping["DeviceName"],
                         "Ebs": {"SnapshotId": snapshot_id, "VolumeSize": int(size),
                                 "DeleteOnTermination": str(delete).lower() in ("true", "1"),
                                 "VolumeType": ebs.get("VolumeType") or "gp2"}})
        if not root or root not in [m["DeviceName"] for m in kept]:
            raise _ec2_error("InvalidBlockDeviceMapping",
                             f"The device '{root}' is not in the block-device mappings: no root device.")
        image = self.ec2_backend.register_image(self._get_param("Name"), self._get_param("Description", ""))
        # moto's Ami makes a snapshot of its own for the root device; AWS makes none.
        if getattr(image, "ebs_snapshot", None) is not None:
            self.ec2_backend.snapshots.pop(image.ebs_snapshot.id, None)
        image.architecture = self._get_param("Architecture") or "x86_64"
        image.root_device_name = root
        image.root_device_type = "ebs"
        image.virtualization_type = self._get_param("VirtualizationType") or "hvm"
        image.boot_mode = self._get_param("BootMode")
        ena = self._get_param("EnaSupport")
        image.ena_support = None if ena is None else str(ena).lower() in ("true", "1")
        image.safehold_mappings = kept
        for specification in self._get_param("TagSpecifications", []):
            if specification.get("ResourceType") == "image":
                self.ec2_backend.create_tags([image.id], {t["Key"]: t["Value"] for t in specification.get("Tags", [])})
        return ActionResult({"ImageId": image.id})

    run_instances = InstanceBackend.run_instances

    def patched_run_instances(self, image_id, count, user_data, security_group_names, **kwargs):
        image = self.amis.get(image_id) if hasattr(self, "amis") else None
        mappings = getattr(image, "safehold_mappings", None)
        if mappings and "block_device_mappings" not in kwargs:
            kwargs["block_device_mappings"] = [dict(m, Ebs=dict(m["Ebs"])) for m in mappings]
        return run_instances(self, image_id, count, user_data, security_group_names, **kwargs)

    Ami.block_device_mappings = property(block_device_mappings)
    Ami.ena_support = None
    AmisResponse.register_image = register_image
    InstanceBackend.run_instances = patched_run_instances


# --- EBS direct APIs ---------------------------------------------------------------------


def _page(indices: list[int], params: dict) -> tuple[list[int], str | None]:
    """AWS paging: StartingBlockIndex, MaxResults (100..10000, default 10000), opaque NextToken."""
    maximum = int(params.get("MaxResults") or 10000)
    if not 100 <= maximum <= 10000:
        raise _validation("MaxResults must be between 100 and 10000")
    start = int(params.get("StartingBlockIndex") or 0)
    token = params.get("NextToken")
    if token:
        try:
            start = max(start, int(base64.b64decode(token).decode()))
        except ValueError:
            raise _validation("The NextToken is not valid") from None
    selected = [i for i in indices if i >= start]
    page, rest = selected[:maximum], selected[maximum:]
    return page, (base64.b64encode(str(rest[0]).encode()).decode() if rest else None)


def _completed_blocks(response, snapshot_id: str) -> dict[int, tuple[bytes, str]]:
    from moto.ec2.models import ec2_backends

    backend = ec2_backends[response.current_account][response.region]
    try:
        snapshot = backend.get_snapshot(snapshot_id)
    except Exception:
        raise _not_found(f"The snapshot '{snapshot_id}' does not exist.") from None
    _refresh_pending([snapshot])
    direct = DIRECT_SNAPSHOTS.get(snapshot_id)
    if snapshot.status != "completed" or (direct and direct["status"] != "completed"):
        raise _validation(f"The snapshot '{snapshot_id}' is not in the completed state.")
    return SNAPSHOT_BLOCKS.get(snapshot_id, {})


def _volume_size(response, snapshot_id: str) -> int:
    from moto.ec2.models import ec2_backends

    return ec2_backends[response.current_account][response.region].get_snapshot(snapshot_id).volume.size


def _params(response) -> dict:
    query = {key: values[0] for key, values in parse_qs(response.querystring_raw or "").items()} \
        if hasattr(response, "querystring_raw") else {}
    for key, values in (response.querystring or {}).items():
        query.setdefault(key, values[0] if isinstance(values, list) else values)
    aliases = {"maxResults": "MaxResults", "pageToken": "NextToken", "startingBlockIndex": "StartingBlockIndex",
               "firstSnapshotId": "FirstSnapshotId", "blockToken": "BlockToken"}
    return {aliases.get(key, key): value for key, value in query.items()}


def _patch_ebs() -> None:
    from moto.core.responses import ActionResult
    from moto.ebs.responses import EBSResponse

    def list_snapshot_blocks(self):
        STATS["list_snapshot_blocks"] += 1
        snapshot_id = self._get_param("SnapshotId")
        params = _params(self)
        with LOCK:
            blocks = _completed_blocks(self, snapshot_id)
            page, next_token = _page(sorted(blocks), params)
            result = {"Blocks": [{"BlockIndex": i, "BlockToken": blocks[i][1]} for i in page],
                      "VolumeSize": _volume_size(self, snapshot_id), "BlockSize": BLOCK_SIZE,
                      "ExpiryTime": time.time() + 3600}
        if next_token:
            result["NextToken"] = next_token
        return ActionResult(result)

    def list_changed_blocks(self):
        STATS["list_changed_blocks"] += 1
        second_id = self._get_param("SecondSnapshotId")
        params = _params(self)
        first_id = self._get_param("FirstSnapshotId") or params.get("FirstSnapshotId")
        with LOCK:
            second = _completed_blocks(self, second_id)
            first = _completed_blocks(self, first_id) if first_id else {}
            if first_id and _volume_size(self, first_id) != _volume_size(self, second_id):
                # AWS compares only snapshots of the same volume size.
                raise _validation("The snapshots must have the same volume size.")
            changed = sorted(i for i in set(first) | set(second)
                             if first.get(i, (None, None))[1] != second.get(i, (None, None))[1])
            page, next_token = _page(changed, params)
            rows = []
            for i in page:
                row: dict[str, Any] = {"BlockIndex": i}
                if i in first:
                    row["FirstBlockToken"] = first[i][1]
                if i in second:
                    row["SecondBlockToken"] = second[i][1]
                rows.append(row)
            result = {"ChangedBlocks": rows, "VolumeSize": _volume_size(self, second_id),
                      "BlockSize": BLOCK_SIZE, "ExpiryTime": time.time() + 3600}
        if next_token:
            result["NextToken"] = next_token
        return ActionResult(result)

    def get_snapshot_block(self):
        snapshot_id = self._get_param("SnapshotId")
        index = int(self._get_param("BlockIndex"))
        token = self._get_param("BlockToken") or _params(self).get("BlockToken")
        with LOCK:
            blocks = _completed_blocks(self, snapshot_id)
            if index not in blocks or not token or blocks[index][1] != token:
                raise _validation("The block token is not valid for this block index.")
            data = blocks[index][0]
            corrupt = (snapshot_id, index) in CORRUPT
            STATS["get_snapshot_block"] += 1
            STATS["get_snapshot_block_bytes"] += len(data)
        digest = checksum(data)
        if corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        return ActionResult({"DataLength": len(data), "BlockData": data, "Checksum": digest,
                             "ChecksumAlgorithm": "SHA256"})

    def start_snapshot(self):
        from moto.ebs.models import ebs_backends
        from moto.ec2.models import ec2_backends

        volume_size = int(self._get_param("VolumeSize"))
        parent_id = self._get_param("ParentSnapshotId")
        tags = self._get_param("Tags")
        description = self._get_param("Description")
        blocks: dict[int, tuple[bytes, str]] = {}
        if parent_id:
            with LOCK:
                blocks = dict(_completed_blocks(self, parent_id))
            if volume_size < _volume_size(self, parent_id):
                raise _validation("The volume size cannot be smaller than the parent snapshot's.")
        snapshot = ebs_backends[self.current_account][self.region].start_snapshot(
            volume_size=volume_size, tags=tags, description=description)
        ec2_backends[self.current_account][self.region].get_snapshot(snapshot.snapshot_id).status = "pending"
        with LOCK:
            SNAPSHOT_BLOCKS[snapshot.snapshot_id] = blocks
            DIRECT_SNAPSHOTS[snapshot.snapshot_id] = {"status": "pending", "size": volume_size, "written": set()}
        result = {"SnapshotId": snapshot.snapshot_id, "OwnerId": snapshot.account_id, "Status": "pending",
                  "StartTime": snapshot.start_time, "VolumeSize": volume_size, "BlockSize": BLOCK_SIZE,
                  "Tags": snapshot.tags, "Description": snapshot.description}
        if parent_id:
            result["ParentSnapshotId"] = parent_id
        return ActionResult(result)

    def put_snapshot_block(self):
        snapshot_id = self._get_param("SnapshotId")
        index = int(self._get_param("BlockIndex"))
        data = self._get_param("BlockData")
        if isinstance(data, str):
            data = data.encode("latin-1")
        data = data or self.body or b""
        if isinstance(data, str):
            data = data.encode("latin-1")
        given = self._get_param("Checksum") or self.headers.get("x-amz-Checksum")
        algorithm = self._get_param("ChecksumAlgorithm") or self.headers.get("x-amz-Checksum-Algorithm")
        length = int(self._get_param("DataLength") or self.headers.get("x-amz-Data-Length") or -1)
        with LOCK:
            direct = DIRECT_SNAPSHOTS.get(snapshot_id)
            if direct is None:
                raise _not_found(f"The snapshot '{snapshot_id}' does not exist.")
            if direct["status"] != "pending":
                raise _validation(f"The snapshot '{snapshot_id}' is not in the pending state.")
            if length != BLOCK_SIZE or len(data) != BLOCK_SIZE:
                raise _validation(f"DataLength must be {BLOCK_SIZE} bytes; got {length} ({len(data)} sent)")
            if algorithm != "SHA256" or given != checksum(data):
                raise _validation("The checksum does not match the block data.")
            if not 0 <= index < direct["size"] * GIB // BLOCK_SIZE:
                raise _validation(f"BlockIndex {index} is outside the volume.")
            SNAPSHOT_BLOCKS[snapshot_id][index] = (bytes(data), new_token())
            direct["written"].add(index)
            STATS["put_snapshot_block"] += 1
        return ActionResult({"Checksum": given, "ChecksumAlgorithm": "SHA256"})

    def complete_snapshot(self):
        from moto.ec2.models import ec2_backends

        snapshot_id = self._get_param("SnapshotId")
        count = self._get_param("ChangedBlocksCount")
        if count is None:
            count = self.headers.get("x-amz-ChangedBlocksCount")
        with LOCK:
            direct = DIRECT_SNAPSHOTS.get(snapshot_id)
            if direct is None:
                raise _not_found(f"The snapshot '{snapshot_id}' does not exist.")
            if count is not None and int(count) != len(direct["written"]):
                raise _validation(f"ChangedBlocksCount {count} does not match the {len(direct['written'])} "
                                  "block(s) written")
            direct["status"] = "completed"
        snapshot = ec2_backends[self.current_account][self.region].get_snapshot(snapshot_id)
        snapshot.status = "completed"
        hold_pending(snapshot)  # CompleteSnapshot may answer "pending": AWS still processes the blocks
        return ActionResult({"Status": snapshot.status})

    EBSResponse.list_snapshot_blocks = list_snapshot_blocks
    EBSResponse.list_changed_blocks = list_changed_blocks
    EBSResponse.get_snapshot_block = get_snapshot_block
    EBSResponse.start_snapshot = start_snapshot
    EBSResponse.put_snapshot_block = put_snapshot_block
    EBSResponse.complete_snapshot = complete_snapshot


# --- test-only endpoints --------------------------------------------------------------------


def _harness_app(moto_app):
    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if not path.startswith("/_harness/"):
            return moto_app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        parts = path.strip("/").split("/")
        status, payload = "200 OK", {}
        with LOCK:
            if parts[1:2] == ["volumes"] and parts[3:] == ["write"]:
                write_volume(parts[2], int(query.get("offset", 0)), body)
            elif parts[1:2] == ["volumes"] and parts[3:] == ["blocks"]:
                blocks = VOLUME_BLOCKS.get(parts[2], {})
                payload = {"block_size": BLOCK_SIZE,
                           "blocks": {str(i): hashlib.sha256(data).hexdigest()
                                      for i, (data, _token) in sorted(blocks.items()) if data.count(0) != len(data)}}
            elif parts[1:] == ["config"]:
                SETTINGS.update(json.loads(body or b"{}"))
                payload = dict(SETTINGS)
            elif parts[1:] == ["corrupt"]:
                request = json.loads(body)
                CORRUPT.add((request["snapshot_id"], int(request["block_index"])))
            elif parts[1:] == ["stats"]:
                payload = dict(STATS)
                if environ["REQUEST_METHOD"] == "DELETE":
                    for key in STATS:
                        STATS[key] = 0
            elif parts[1:] == ["reset"]:
                for store in (VOLUME_BLOCKS, SNAPSHOT_BLOCKS, PENDING_UNTIL, DIRECT_SNAPSHOTS):
                    store.clear()
                CORRUPT.clear()
                SETTINGS["pending_seconds"] = 0.0
            else:
                status, payload = "404 Not Found", {"error": f"no harness endpoint {path}"}
        data = json.dumps(payload).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    return app


def serve(port: int = 0, port_file: str | None = None) -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    _patch_ec2()
    _patch_images()
    _patch_ebs()
    app = _harness_app(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler)
    if port_file:
        with open(port_file + ".tmp", "w") as handle:
            handle.write(str(server.server_address[1]))
        os.replace(port_file + ".tmp", port_file)
    server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", help="write the bound port here once listening")
    args = parser.parse_args()
    serve(args.port, args.port_file)


if __name__ == "__main__":
    main()
