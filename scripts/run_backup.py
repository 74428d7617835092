#!/usr/bin/env python3
"""The seed's interface, kept for existing cron jobs: a thin wrapper over ``safehold backup``.

    python scripts/run_backup.py --target NAME [--target NAME ...] [--all] [--config targets.yml] [--json]
"""

import argparse

from safehold.cli.main import run


def main() -> None:
    parser = argparse.ArgumentParser(description="Back up targets of targets.yml (same as 'safehold backup').")
    parser.add_argument("--target", action="append", default=[], help="target name (repeatable)")
    parser.add_argument("--all", action="store_true", help="every target")
    parser.add_argument("--config", help="targets.yml (default: $SAFEHOLD_CONFIG or configs/targets.yml)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args()
    argv = (["--config", args.config] if args.config else []) + ["backup"]
    argv += [a for name in args.target for a in ("--target", name)]
    argv += ["--all"] if args.all else []
    argv += ["--json"] if args.json else []
    run(argv)


if __name__ == "__main__":
    main()
