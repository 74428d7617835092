#!/usr/bin/env python3
"""The seed's interface, kept for existing runbooks: a thin wrapper over ``safehold restore``.

    python scripts/run_restore.py --snapshot-id ID --destination DIR_OR_FILE [--include PATH] [--config F]

(``--destination-instance`` for EBS restores arrives with the AWS drivers.)
"""

import argparse

from safehold.cli.main import run


def main() -> None:
    parser = argparse.ArgumentParser(description="Restore a snapshot (same as 'safehold restore').")
    parser.add_argument("--snapshot-id", required=True, help="snapshot id, prefix, 'latest' or 'latest:TARGET'")
    parser.add_argument("--destination", required=True, help="directory (files) or image file / block device")
    parser.add_argument("--include", action="append", default=[], help="only this path (repeatable)")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--config", help="targets.yml (default: $SAFEHOLD_CONFIG or configs/targets.yml)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    argv = (["--config", args.config] if args.config else []) + ["restore", args.snapshot_id, "--to", args.destination]
    argv += [a for path in args.include for a in ("--include", path)]
    argv += ["--overwrite"] if args.overwrite else []
    argv += ["--json"] if args.json else []
    run(argv)


if __name__ == "__main__":
    main()
