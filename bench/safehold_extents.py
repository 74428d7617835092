"""Back up one safehold image target given its changed extents (phase 4 of bench/run.py).

Run by the Python beside the ``safehold`` under test, as its own process, so it
is timed like the CLI runs:  python safehold_extents.py CONFIG TARGET EXTENTS.json
EXTENTS.json holds ``[[offset, length], ...]``. Prints the backup result as JSON.
"""

import json
import sys

from safehold.engine.backup import backup_target
from safehold.engine.context import Context


def main() -> None:
    config, target, extents_file = sys.argv[1:4]
    with open(extents_file) as f:
        changed = [(int(offset), int(length)) for offset, length in json.load(f)]
    context = Context.load(config)
    try:
        result = backup_target(context, target, changed=changed)
    finally:
        context.close()
    json.dump(result.as_dict(), sys.stdout, default=str)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
