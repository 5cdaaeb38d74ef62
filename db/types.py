"""Column types that mean the same thing on PostgreSQL and SQLite.

The seed schema uses PostgreSQL arrays and JSONB; the embedded default runs on SQLite, which has
neither. These variants keep one model for both: native types on PostgreSQL, JSON text on SQLite.
SQLite also stores datetimes without a zone, so `UTCDateTime` hands back aware UTC values there.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """`TIMESTAMP WITH TIME ZONE` that always returns aware UTC datetimes."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware datetime")
        value = value.astimezone(UTC)
        # SQLite compares datetimes as text, so store them all in one (naive UTC) form.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # raw SQL on SQLite (server defaults) yields text
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: JSONB on PostgreSQL, JSON on SQLite.
JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def text_array() -> sa.types.TypeEngine[Any]:
    """`TEXT[]` on PostgreSQL, a JSON list on SQLite."""
    return sa.JSON().with_variant(postgresql.ARRAY(sa.Text()), "postgresql")


class UUIDList(sa.types.TypeDecorator[list[uuid.UUID]]):
    """`UUID[]` on PostgreSQL, a JSON list of strings on SQLite; UUIDs in Python."""

    impl = sa.JSON()
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.ARRAY(sa.Uuid(as_uuid=True)))
        return dialect.type_descriptor(sa.JSON())

    def process_bind_param(self, value: list[uuid.UUID] | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        items = [v if isinstance(v, uuid.UUID) else uuid.UUID(str(v)) for v in value]
        return items if dialect.name == "postgresql" else [str(v) for v in items]

    def process_result_value(self, value: Any, dialect: Dialect) -> list[uuid.UUID] | None:
        if value is None:
            return None
        return [v if isinstance(v, uuid.UUID) else uuid.UUID(str(v)) for v in value]


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)
