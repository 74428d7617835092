"""Back up one safehold image target given its changed extents (phase 4 of bench/run.py).

Run by the Python beside the ``safehold`` under test, as its own process, so it
is timed like the CLI runs:  python safehold_extents.py CONFIG TARGET EXTENTS.json
EXTENTS.json holds ``[[offset, length], ...]``. Prints the backup result as JSON,
with ``engine_s``: the time of the ``backup_target`` call alone, after the imports,
the key derivation and the catalog are done, which is what the incremental costs
inside a running worker (the scheduler of ``safehold serve``) rather than a fresh
process.
"""

import json
import sys
import time

from safehold.engine.backup import backup_target
from safehold.engine.context import Context


def main() -> None:
    config, target, extents_file = sys.argv[1:4]
    with open(extents_file) as f:
        changed = [(int(offset), int(length)) for offset, length in json.load(f)]
    context = Context.load(config)
    try:
        context.catalog  # what a running worker already holds: the catalog open, the key unwrapped
        context.open_repository(load_index=False)
        started = time.perf_counter()
        result = backup_target(context, target, changed=changed)
        engine_s = time.perf_counter() - started
    finally:
        context.close()
    json.dump(result.as_dict() | {"engine_s": engine_s}, sys.stdout, default=str)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
