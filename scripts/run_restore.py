#!/usr/bin/env python3
"""The seed's interface, kept for existing runbooks: a thin wrapper over ``safehold restore``.

    python scripts/run_restore.py --snapshot-id ID --destination DIR_OR_FILE [--include PATH] [--config F]
    python scripts/run_restore.py --snapshot-id snap-... --destination-instance i-... [--device /dev/sdf] [--region R]

With ``--destination-instance`` the snapshot (an EBS snapshot id, or a safehold snapshot of an image)
becomes a new EBS volume attached to the instance.
"""

import argparse

from safehold.cli.main import run


def main() -> None:
    parser = argparse.ArgumentParser(description="Restore a snapshot (same as 'safehold restore').")
    parser.add_argument("--snapshot-id", required=True,
                        help="snapshot id, prefix, 'latest' or 'latest:TARGET'; or an EBS snapshot id (snap-...)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--destination", help="directory (files) or image file / block device")
    target.add_argument("--destination-instance", help="EC2 instance to attach the restored volume to")
    parser.add_argument("--device", help="with --destination-instance: device name, e.g. /dev/sdf")
    parser.add_argument("--region", help="with --destination-instance: the snapshot's region")
    parser.add_argument("--include", action="append", default=[], help="only this path (repeatable)")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--config", help="targets.yml (default: $SAFEHOLD_CONFIG or configs/targets.yml)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    argv = (["--config", args.config] if args.config else []) + ["restore", "--snapshot-id", args.snapshot_id]
    if args.destination_instance:
        argv += ["--destination-instance", args.destination_instance]
        argv += ["--device", args.device] if args.device else []
        argv += ["--region", args.region] if args.region else []
    else:
        argv += ["--to", args.destination]
    argv += [a for path in args.include for a in ("--include", path)]
    argv += ["--overwrite"] if args.overwrite else []
    argv += ["--json"] if args.json else []
    run(argv)


if __name__ == "__main__":
    main()
