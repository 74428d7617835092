#!/usr/bin/env bash
# The main job on the embedded default: installs safehold into .venv, then
# backs up the example targets of configs/targets.yml into ./var/repo (catalog:
# ./var/state/catalog.db), lists the snapshots, restores the newest into a
# fresh folder under ./var/restore/, verifies it byte for byte and prints a
# summary. Run it again for an incremental snapshot.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python scripts/quickstart.py "$@"
