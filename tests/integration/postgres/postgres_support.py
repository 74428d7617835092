"""Helpers of the postgres suite: a database with an ``orders`` table, and a targets.yml."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

PASSWORD = "postgres-suite-repository-password"


def fill_orders(server, database: str, rows: int, payload: int = 100) -> None:
    """An ``orders`` table of ``rows`` rows with ``payload`` characters of pseudo-random text each
    (md5s: realistic, compressible about 2:1, not dedupable within itself)."""
    repeats = max(1, payload // 32)
    server.execute(database, "create table orders (id bigint primary key, customer text, amount numeric, note text)")
    server.execute(database, f"""insert into orders
        select i, 'customer-' || (i % 997), (i * 7 % 10000) / 100.0,
               (select string_agg(md5((i * 31 + j)::text), '') from generate_series(1, {repeats}) j)
        from generate_series(1, {rows}) i""")


def change_rows(server, database: str, percent: float) -> int:
    """Update ``percent`` % of the orders, spread over the table; the number changed."""
    step = max(1, round(100 / percent))
    rows = server.execute(database, "update orders set amount = amount + 1, note = md5(note) || substr(note, 33) "
                                    f"where id % {step} = 0 returning id")
    return len(rows)


def write_config(folder: Path, source: str, restore_test: str | None = None) -> Path:
    path = folder / "targets.yml"
    test = f"\n    restore_test: {restore_test}" if restore_test else ""
    path.write_text(textwrap.dedent(f"""\
        repository: {{url: {folder / 'repo'}, password_env: SAFEHOLD_TEST_PG_SUITE_PASSWORD}}
        catalog: {{url: "sqlite:///{folder / 'state' / 'catalog.db'}"}}
        state_dir: {folder / 'state'}
        targets:
          - name: db
            tier: 2
            source: {source}""") + test + "\n")
    os.environ["SAFEHOLD_TEST_PG_SUITE_PASSWORD"] = PASSWORD
    return path
