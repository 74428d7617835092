"""API tokens for the control plane: create, list, revoke, authenticate.

A token is ``sht_`` plus 256 random bits (URL-safe base64). It is shown once,
when created; the catalog keeps only its SHA-256, so a leaked catalog (or a
backup of it) opens nothing. Roles are ordered: a viewer reads, an operator
also starts and cancels jobs, an admin also manages tokens.

Like the rest of the catalog, every method is its own short transaction and
hands out frozen records of plain values, so one ``TokenStore`` serves many
request threads.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import insert, select, update

from safehold.catalog.models import ApiToken
from safehold.catalog.store import Catalog
from safehold.errors import TokenNotFound, UsageError

ROLES = ("viewer", "operator", "admin")
"""From least to most allowed; each role may do everything the ones before it may."""

TOKEN_PREFIX = "sht_"

#: ``last_used_at`` is written at most this often per token: a write per request would
#: serialise every API call on SQLite's write lock for a value nobody needs to the second.
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


def role_allows(role: str, required: str) -> bool:
    """True when ``role`` includes the rights of ``required``."""
    return ROLES.index(role) >= ROLES.index(required)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: int
    name: str
    role: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "created_at": self.created_at.isoformat(),
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "active": self.active,
        }

    @classmethod
    def from_row(cls, row: ApiToken) -> TokenRecord:
        return cls(id=row.id, name=row.name, role=row.role, created_at=row.created_at,
                   last_used_at=row.last_used_at, revoked_at=row.revoked_at)


class TokenStore:
    """The ``api_tokens`` table of a catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def create(self, name: str, role: str) -> tuple[TokenRecord, str]:
        """Create a token; returns its record and the token itself (the only time it is known)."""
        if role not in ROLES:
            raise UsageError(f"unknown role {role!r}; expected one of: {', '.join(ROLES)}")
        name = name.strip()
        if not name or len(name) > 255:
            raise UsageError("a token needs a name of 1 to 255 characters (who or what uses it)")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.catalog._write.begin() as session:
            token_id = session.execute(
                insert(ApiToken).values(name=name, role=role, token_hash=hash_token(token),
                                        created_at=self.catalog._clock()).returning(ApiToken.id)
            ).scalar_one()
        return self.get(token_id), token

    def get(self, token_id: int) -> TokenRecord:
        with self.catalog._read() as session:
            row = session.get(ApiToken, token_id)
            if row is None:
                raise TokenNotFound(token_id=token_id)
            return TokenRecord.from_row(row)

    def list(self, include_revoked: bool = False) -> list[TokenRecord]:
        query = select(ApiToken).order_by(ApiToken.id)
        if not include_revoked:
            query = query.where(ApiToken.revoked_at.is_(None))
        with self.catalog._read() as session:
            return [TokenRecord.from_row(row) for row in session.scalars(query)]

    def revoke(self, token_id: int) -> TokenRecord:
        """Revoke a token (idempotent: revoking a revoked token keeps its first revocation time)."""
        with self.catalog._write.begin() as session:
            session.execute(update(ApiToken).where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
                            .values(revoked_at=self.catalog._clock()))
        return self.get(token_id)  # TokenNotFound for an unknown id

    def authenticate(self, token: str) -> TokenRecord | None:
        """The active token matching ``token``, or None."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        digest = hash_token(token)
        with self.catalog._read() as session:
            row = session.execute(select(ApiToken).where(ApiToken.token_hash == digest)).scalar_one_or_none()
            record = TokenRecord.from_row(row) if row is not None else None
        if record is None or not record.active:
            return None
        now = self.catalog._clock()
        if record.last_used_at is None or now - record.last_used_at >= LAST_USED_RESOLUTION:
            with self.catalog._write.begin() as session:
                session.execute(update(ApiToken).where(ApiToken.id == record.id).values(last_used_at=now))
        return record
