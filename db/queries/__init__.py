"""Queries that carry real semantics (claims, the run mirror, deliveries)."""

from __future__ import annotations

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


def dialect_insert(session: AsyncSession) -> type[postgresql.Insert] | type[sqlite.Insert]:
    """The `insert` of the session's database (both have `on_conflict_do_*`)."""
    name = session.get_bind().dialect.name
    return postgresql.insert if name == "postgresql" else sqlite.insert  # type: ignore[return-value]
