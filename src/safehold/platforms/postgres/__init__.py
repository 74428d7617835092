"""PostgreSQL, shared by the postgres source and the postgres restore destination.

Concepts: :mod:`.connection` (``Server``: how to reach a server without a password on any command
line, its version and databases, the environment its client tools get), :mod:`.tools` (finding
``pg_dump``, ``pg_restore`` ... of a major version at least the server's), :mod:`.cluster` (a
throwaway cluster made with ``initdb``/``pg_ctl`` for restore tests and drills). psycopg is
imported lazily (the ``postgres`` extra), so safehold imports without it.
"""
