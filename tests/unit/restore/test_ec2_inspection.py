"""What ``--to-ec2`` reads from a boot disk (partition table, boot mode) and the sandbox owner tags
EC2 hands back (hostile: anyone who may tag can write them)."""

from __future__ import annotations

import struct

from safehold.platforms.aws.ec2 import owner_tag, parse_owner
from safehold.restore.ec2 import _ESP, inspect_boot_sectors

SECTOR = 512


def mbr(active: bool, kind: int = 0x83) -> bytes:
    head = bytearray(17 * 1024)
    head[446] = 0x80 if active else 0
    head[446 + 4] = kind
    head[510:512] = b"\x55\xaa"
    return bytes(head)


def gpt(partition_type: bytes) -> bytes:
    head = bytearray(mbr(False, 0xEE))
    head[SECTOR:SECTOR + 8] = b"EFI PART"
    head[2 * SECTOR:2 * SECTOR + 16] = partition_type
    return bytes(head)


def test_partition_tables_and_their_warnings() -> None:
    assert inspect_boot_sectors(gpt(_ESP)) == ("gpt-efi", [])
    scheme, warnings = inspect_boot_sectors(gpt(bytes(range(16))))
    assert scheme == "gpt" and "neither an EFI system partition nor a BIOS boot partition" in warnings[0]
    assert inspect_boot_sectors(mbr(True)) == ("mbr", [])
    assert "marks no partition active" in inspect_boot_sectors(mbr(False))[1][0]
    ext4 = bytearray(17 * 1024)
    struct.pack_into("<H", ext4, 1080, 0xEF53)
    scheme, warnings = inspect_boot_sectors(bytes(ext4))
    assert scheme == "none" and "ext2/3/4 file system fills the whole disk" in warnings[0]
    assert "direct kernel boot" in inspect_boot_sectors(bytes(17 * 1024))[1][0]
    assert inspect_boot_sectors(b"")[0] == "none"  # a disk shorter than a sector


def test_owner_tags_round_trip_and_foreign_values_are_not_ours() -> None:
    attributes = {"job": "7", "pid": "123", "created": "1.5", "deadline": "0.000", "namespace": "host|boot|42"}
    assert parse_owner(owner_tag(attributes)) == attributes
    assert len(owner_tag(dict(attributes, namespace="x" * 500))) == 256
    for value in ("", "pid=1", "pid=x;created=1;deadline=0;namespace=n", "job=1;job=2;pid=1;created=1;deadline=0;namespace=n",
                  "rm=-rf;pid=1;created=1;deadline=0;namespace=n", "pid=1;created=1;deadline=0;namespace=n;extra"):
        assert parse_owner(value) is None, value
