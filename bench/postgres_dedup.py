"""PostgreSQL dumps between days: how much does a second dump add after 1 % of the rows changed?

    python bench/postgres_dedup.py [--url postgresql://postgres@127.0.0.1:PORT/postgres] [--rows 200000]

Without --url it runs against a throwaway cluster of its own (``initdb``/``pg_ctl``, as restore tests do).

For each pg_dump compression level (0: uncompressed, safehold's default; 6: the custom format's
own default) and each pattern of change, it makes a fresh database with an ``orders`` table of
``--rows`` rows (~230 bytes each: md5 text, realistic and not dedupable within itself), backs it
up with a ``postgres`` source into a fresh repository, changes 1 % of the rows, backs it up again
and reports what each backup added to the repository (stored bytes, after the repository's own
zstd and encryption). Patterns: ``recent`` updates the newest 1 % of the rows (orders still being
worked on), ``spread`` every hundredth row across the whole table (the worst case for any
chunking: every chunk holds a changed row).

Writes the section between the postgres-dedup markers of docs/benchmarks.md (appended when absent).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration" / "postgres"))
BEGIN, END = "<!-- postgres-dedup:begin -->", "<!-- postgres-dedup:end -->"
MiB = 1024 * 1024
# A change that keeps the row's size, as most updates do (a shrinking row may move into the free
# space of an earlier page and so change the dump there too).
UPDATE = "update orders set amount = amount + 1, note = md5(note) || substr(note, 33)"


def measure(url: str, rows: int, compress: int, pattern: str) -> dict:
    from postgres_support import fill_orders, write_config
    from psycopg import sql

    from safehold.engine.backup import backup_target
    from safehold.engine.context import Context
    from safehold.engine.maintenance import init_repository
    from safehold.platforms.postgres.connection import Server

    server = Server(dsn=url)
    name = f"safehold_bench_{uuid.uuid4().hex[:8]}"
    server.execute(None, sql.SQL("create database {}").format(sql.Identifier(name)))
    try:
        fill_orders(server, name, rows, payload=200)
        with tempfile.TemporaryDirectory(prefix="safehold-pg-bench-") as folder:
            source = f'{{type: postgres, dsn: "{url}", databases: [{name}], compress: {compress}, globals: false}}'
            context = Context.load(write_config(Path(folder), source))
            init_repository(context)
            started = time.monotonic()
            first = backup_target(context, "db").summary
            first_seconds = time.monotonic() - started
            if pattern == "recent":
                changed = server.execute(name, f"{UPDATE} where id > {rows - rows // 100} returning id")
            else:
                changed = server.execute(name, f"{UPDATE} where id % 100 = 0 returning id")
            started = time.monotonic()
            second = backup_target(context, "db").summary
            second_seconds = time.monotonic() - started
            context.close()
    finally:
        server.execute(None, sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
    return {"compress": compress, "pattern": pattern, "changed": len(changed), "dump": second["bytes_read"],
            "first_added": first["bytes_added"], "second_added": second["bytes_added"],
            "first_seconds": first_seconds, "second_seconds": second_seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="libpq URI of a server to make databases on (default: a throwaway cluster)")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    os.environ.setdefault("SAFEHOLD_TEST_PG_SUITE_PASSWORD", "bench")
    cluster = None
    url = args.url
    if not url:
        from safehold.platforms.postgres.cluster import TemporaryCluster

        cluster = TemporaryCluster(150000)
        server = cluster.start()
        url = f"postgresql://postgres@/postgres?host={server.host}&port={server.port}"
    try:
        results = [measure(url, args.rows, compress, pattern) for compress in (0, 6) for pattern in ("recent", "spread")]
    finally:
        if cluster is not None:
            cluster.stop()
    table = [BEGIN, "",
             f"`python bench/postgres_dedup.py --rows {args.rows}` (PostgreSQL 15, one `orders` table, "
             "pg_dump --format=custom; added = stored bytes after the repository's zstd and encryption):", "",
             "| pg_dump compress | 1 % changed | dump MiB | 1st backup added MiB | 2nd backup added MiB | "
             "2nd / 1st | 2nd backup s |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        table.append(f"| {r['compress']} | {r['pattern']} ({r['changed']} rows) | {r['dump'] / MiB:.1f} | "
                     f"{r['first_added'] / MiB:.1f} | {r['second_added'] / MiB:.2f} | "
                     f"{r['second_added'] / r['first_added']:.1%} | {r['second_seconds']:.1f} |")
    table += ["", END]
    for line in table:
        print(line)
    path = Path(args.out)
    text = path.read_text()
    block = "\n".join(table)
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n## PostgreSQL dumps: deduplication between days\n\n" + block + "\n"
    path.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
