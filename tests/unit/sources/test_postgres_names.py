"""A database's dump file name is one safe path component that maps back to the database."""

import pytest

from safehold.restore.postgres import _database_of
from safehold.sources.postgres import dump_name


@pytest.mark.parametrize("database", ["shop", "my db", "a/b", "..", ".hidden", "100%", "ünï", "x.pgdump"])
def test_dump_names_are_single_components_and_round_trip(database):
    name = dump_name(database)
    assert "/" not in name and not name.startswith(".") and name.endswith(".pgdump")
    assert _database_of(name.encode()) == database


def test_other_files_are_not_dumps():
    assert _database_of(b"globals.sql") is None
    assert _database_of(b"dir/shop.pgdump") is None
    assert _database_of(b"\xff.pgdump") is None
