"""The repository: format, crypto, chunking, packs, index, snapshots, locks, check, forget and prune.

Knows nothing of sources, clouds, VMs or the catalog. Concepts:
- ``backends``: dumb stores of immutable named objects;
- ``crypto``: master key, key files, keyed BLAKE3 ids, AES-256-GCM;
- ``pack``/``index``: blobs grouped into packs, and where each blob lives;
- ``repository``: opening, blob storage, snapshots and item streams;
- ``archiver``: turns source items into blobs and a snapshot;
- ``locks``, ``check``, ``retention``, ``prune``.
"""

from .repository import FORMAT_VERSION, Repository, Snapshot

__all__ = ["FORMAT_VERSION", "Repository", "Snapshot"]
