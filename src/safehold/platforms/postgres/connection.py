"""How safehold reaches a PostgreSQL server: ``Server``.

A password never appears on a command line, in a DSN written in the configuration, or in a log:
it comes from an environment variable or a file the configuration names, is handed to psycopg as
a keyword, and to the client tools (``pg_dump``, ``pg_restore`` ...) in their environment as
``PGPASSWORD`` (or ``PGPASSFILE`` for a libpq password file). Child processes are given a conninfo
string without it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ...errors import PostgresError

#: libpq environment variables that would silently change where a child tool connects.
_STEERING = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGUSER", "PGDATABASE", "PGSERVICE", "PGSERVICEFILE", "PGOPTIONS")


def dsn_has_password(dsn: str) -> bool:
    """True when ``dsn`` (a URI or key=value conninfo) carries a password."""
    text = dsn.strip()
    if re.match(r"^postgres(ql)?://", text):
        parts = urlsplit(text)
        return bool(parts.password) or "password" in parse_qs(parts.query)
    return re.search(r"(^|\s)password\s*=", text) is not None


@dataclass(frozen=True)
class Server:
    """A server to connect to: a DSN (without password) or host/port/user, and a password read
    from the environment or a file by the caller (never written anywhere by this class)."""

    dsn: str | None = None
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = None
    passfile: str | None = None  # a libpq password file (PGPASSFILE)

    def __post_init__(self) -> None:
        if self.dsn and dsn_has_password(self.dsn):
            raise PostgresError(server=self.describe(), detail="the DSN holds a password; give it through "
                                "password_env or a password file instead")

    def conninfo(self, database: str | None = None) -> str:
        """A libpq connection string for ``database`` (default: the DSN's, or 'postgres'), without password."""
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        base: dict[str, Any] = conninfo_to_dict(self.dsn) if self.dsn else {}
        for key, value in (("host", self.host), ("port", self.port), ("user", self.user)):
            if value is not None:
                base[key] = str(value)
        if database is not None:
            base["dbname"] = database
        base.setdefault("dbname", "postgres")
        base.pop("password", None)
        if self.passfile:
            base["passfile"] = self.passfile
        return make_conninfo(**base)

    def describe(self, database: str | None = None) -> str:
        """Where, for messages: host:port/database (never the password)."""
        if self.dsn and not (self.host or self.port):
            try:
                parts = self._parts()
            except Exception:  # an unparsable DSN is reported by the connection attempt
                return "the configured DSN"
            host, port, name = parts.get("host", "localhost"), parts.get("port", "5432"), parts.get("dbname", "")
        else:
            host, port, name = self.host or "localhost", self.port or 5432, ""
        return f"{host}:{port}/{database or name or 'postgres'}"

    def _parts(self) -> dict[str, Any]:
        from psycopg.conninfo import conninfo_to_dict

        return conninfo_to_dict(self.dsn or "")

    def environment(self) -> dict[str, str]:
        """The environment for a client tool: this process's, without libpq variables that would
        steer it elsewhere, with the password (or password file) it needs."""
        env = {key: value for key, value in os.environ.items() if key not in _STEERING}
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        if self.passfile:
            env["PGPASSFILE"] = self.passfile
        return env

    def connect(self, database: str | None = None, autocommit: bool = True) -> Any:
        """A psycopg connection; PostgresError naming the server when it cannot be made."""
        try:
            import psycopg
        except ImportError:
            raise PostgresError(server=self.describe(database), detail="psycopg is not installed; "
                                "install safehold with the 'postgres' extra") from None
        kwargs: dict[str, Any] = {"autocommit": autocommit, "connect_timeout": 30}
        if self.password is not None:
            kwargs["password"] = self.password
        try:
            return psycopg.connect(self.conninfo(database), **kwargs)
        except psycopg.Error as exc:
            raise PostgresError(server=self.describe(database), detail=_one_line(exc)) from None

    def version(self) -> int:
        """The server's version number (150018 for 15.18)."""
        with self.connect() as connection:
            return int(connection.info.server_version)

    def databases(self) -> list[str]:
        """Every database one can connect to, templates left out, by name."""
        with self.connect() as connection:
            rows = connection.execute("select datname from pg_database where datallowconn and not datistemplate "
                                      "order by datname").fetchall()
        return [row[0] for row in rows]

    def execute(self, database: str | None, statement: Any, parameters: Any = None) -> list[tuple]:
        """Run one statement in autocommit; its rows (empty for a statement without)."""
        import psycopg

        with self.connect(database) as connection:
            try:
                cursor = connection.execute(statement, parameters)
                return cursor.fetchall() if cursor.description else []
            except psycopg.Error as exc:
                raise PostgresError(server=self.describe(database), detail=_one_line(exc)) from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def major_of(version_number: int) -> int:
    """The major version of a server version number: 150018 -> 15, 90624 -> 9.6 as 906."""
    return version_number // 10000 if version_number >= 100000 else version_number // 100


def version_text(version_number: int) -> str:
    if version_number >= 100000:
        return f"{version_number // 10000}.{version_number % 10000}"
    return f"{version_number // 10000}.{version_number // 100 % 100}.{version_number % 100}"
