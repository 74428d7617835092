"""safehold: backup and disaster-recovery control plane.

Layers (one package each): ``repository`` (format, crypto, packs, index,
snapshots, locks), ``repository.backends`` (dumb object stores), ``sources``
(what to back up), ``restore`` (where to put it back), ``catalog`` (job history),
``engine`` (job runners used by both CLI and server), ``config`` (targets.yml),
``cli`` (Typer commands, no logic).
"""

__version__ = "0.1.0"
