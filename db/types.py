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
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal


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


class _CastOnPostgres(ColumnElement[Any]):
    """`CAST(expr AS pg_type)` on PostgreSQL, `expr` as it is on any other database."""

    inherit_cache = True
    _traverse_internals = [
        ("expr", InternalTraversal.dp_clauseelement),
        ("pg_type", InternalTraversal.dp_string),
        ("type", InternalTraversal.dp_type),
    ]

    def __init__(self, expr: ColumnElement[Any], pg_type: str, type_: Any) -> None:
        self.expr = expr
        self.pg_type = pg_type
        self.type = type_


@compiles(_CastOnPostgres)
def _compile_uncast(element: _CastOnPostgres, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.expr, **kw))


@compiles(_CastOnPostgres, "postgresql")
def _compile_cast(element: _CastOnPostgres, compiler: Any, **kw: Any) -> str:
    return f"CAST({compiler.process(element.expr, **kw)} AS {element.pg_type})"


class UUIDList(sa.types.TypeDecorator[list[uuid.UUID]]):
    """`UUID[]` on PostgreSQL, a JSON list of strings on SQLite; UUIDs in Python.

    On PostgreSQL the values travel as `TEXT[]`, cast to and from `UUID[]` in the statement:
    asyncpg has no built-in codec for `UUID[]` and would look its type up on every new
    connection (three catalog queries, 12-20 ms here) the first time a statement binds or
    returns one: on a flow run's critical path, where every connection is new.
    """

    impl = sa.JSON()
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.ARRAY(sa.Text()))
        return dialect.type_descriptor(sa.JSON())

    def bind_expression(self, bindvalue: Any) -> ColumnElement[Any]:
        return _CastOnPostgres(bindvalue, "UUID[]", self)

    def column_expression(self, column: Any) -> ColumnElement[Any]:
        return _CastOnPostgres(column, "TEXT[]", self)

    def process_bind_param(self, value: list[uuid.UUID] | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return [str(v if isinstance(v, uuid.UUID) else uuid.UUID(str(v))) for v in value]

    def process_result_value(self, value: Any, dialect: Dialect) -> list[uuid.UUID] | None:
        if value is None:
            return None
        return [v if isinstance(v, uuid.UUID) else uuid.UUID(str(v)) for v in value]


@compiles(UUIDList, "postgresql")
def _compile_uuid_list(type_: UUIDList, compiler: Any, **kw: Any) -> str:
    # The column's type in DDL: what travels is TEXT[], what is stored is UUID[].
    return "UUID[]"


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)
