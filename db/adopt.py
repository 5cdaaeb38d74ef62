"""Adopt an existing PostgreSQL database in place: keep every table and row, add what we need.

The team this project replaces already runs PostgreSQL with the seed's tables (rows, views, an
`updated_at` trigger) and their own `products` / `ad_runs` of another shape. `adopt_schema`
brings such a database to the shape of `db.models` without losing a table, column or row:

- missing tables are created; missing columns are added nullable, or filled with a default;
- rows are backfilled (`tenant_id` where empty, brands from the distinct `brand_id`s, the
  project's columns from the seed's: run timestamps, ad runs' templates and jobs);
- NOT NULL, CHECK, UNIQUE and FOREIGN KEY constraints and unique indexes are added only where the
  existing rows satisfy them; otherwise the report names the constraint and the rows that block it
  (nothing else is held back);
- the seed's views and trigger are replaced with the project's (same names; the new views keep
  every column the old ones had that the tables still hold, so old queries keep working).

Everything happens in one transaction (PostgreSQL DDL is transactional), so a failure leaves the
database as it was, and a dry run is the same work rolled back: its report is exactly what the
real run would do. What existed before (tables, columns, constraints, indexes, view, trigger and
function definitions) is recorded in `ad_scheduler_adoption`, so a downgrade (`downgrade_adopted`)
removes only what the project added and restores what it replaced.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from db.models import Base
from domain.errors import AdSchedulerError

#: Bookkeeping of what existed before adoption (its presence marks an adopted database).
BOOKKEEPING_TABLE = "ad_scheduler_adoption"
#: Rows whose empty pre-existing column adoption filled (a downgrade empties them again).
BACKFILL_TABLE = "ad_scheduler_adoption_backfill"
SEED_VIEWS = ("v_active_scheduled_jobs", "v_recent_job_runs")
UPDATED_AT_FUNCTION = "update_updated_at_column"
#: Tables whose `updated_at` the trigger keeps current (as in revision 0001).
UPDATED_AT_TABLES = (
    "brands",
    "products",
    "ad_templates",
    "scheduled_jobs",
    "scheduled_job_runs",
    "ad_runs",
    "export_deliveries",
)
#: How many blocking row ids a report lists per constraint.
SAMPLE_ROWS = 5

# The project's views and trigger function, as revision 0001 creates them on PostgreSQL (a test
# compares an adopted database's views with a fresh one's). `{extra}` takes the columns of the
# seed's own view that the project's lacks, so that queries written for the old view still work.
#: Each view's main table and its alias in the view.
VIEW_BASE = {
    "v_active_scheduled_jobs": ("scheduled_jobs", "j"),
    "v_recent_job_runs": ("scheduled_job_runs", "r"),
}
VIEW_SQL = {
    "v_active_scheduled_jobs": """
        CREATE VIEW v_active_scheduled_jobs AS
        SELECT j.id, j.tenant_id, j.name, j.brand_id, j.product_id, p.name AS product_name,
               j.schedule_type, j.cron_expression, j.timezone, j.scheduled_at, j.next_run_at,
               j.max_runs, j.runs_completed, j.template_mode, j.template_count,
               j.prefect_deployment_id, j.last_run_at, j.created_at{extra}
        FROM scheduled_jobs j
        JOIN products p ON p.id = j.product_id
        WHERE j.status = 'active' AND j.deleted_at IS NULL
    """,
    "v_recent_job_runs": """
        CREATE VIEW v_recent_job_runs AS
        SELECT r.id, r.tenant_id, r.scheduled_job_id, j.name AS job_name, j.product_id,
               j.brand_id, r.flow_run_id, r.trigger, r.status, r.prefect_state, r.skip_reason,
               r.scheduled_for, r.started_at, r.completed_at, r.error_message, r.ad_run_ids,
               r.templates_used, r.created_at{extra}
        FROM scheduled_job_runs r
        JOIN scheduled_jobs j ON j.id = r.scheduled_job_id
        WHERE r.created_at > NOW() - INTERVAL '7 days'
    """,
}
FUNCTION_SQL = f"""
    CREATE OR REPLACE FUNCTION {UPDATED_AT_FUNCTION}() RETURNS TRIGGER AS $$
    BEGIN
        NEW.updated_at = NOW();
        RETURN NEW;
    END;
    $$ LANGUAGE plpgsql
"""

# Types that read and write the same Python values through asyncpg (the project's type first).
_COMPATIBLE = {
    "uuid": {"uuid"},
    "text": {"text", "character varying", "character", "citext"},
    "timestamp with time zone": {"timestamp with time zone"},
    "integer": {"integer", "bigint", "smallint"},
    "boolean": {"boolean"},
    "json": {"json", "jsonb"},
    "jsonb": {"jsonb", "json"},
    "text[]": {"text[]", "character varying[]"},
    "uuid[]": {"uuid[]"},
}

# Seed columns the project's added columns are filled from, when the column is added now.
_DERIVED_BACKFILLS: dict[tuple[str, str], tuple[str, str]] = {
    ("scheduled_job_runs", "created_at"): (
        "UPDATE scheduled_job_runs SET created_at = COALESCE(started_at, completed_at, created_at)",
        "from started_at / completed_at",
    ),
    ("scheduled_job_runs", "updated_at"): (
        "UPDATE scheduled_job_runs SET updated_at = COALESCE(completed_at, started_at, updated_at)",
        "from completed_at / started_at",
    ),
    ("ad_runs", "template_storage_name"): (
        "UPDATE ad_runs a SET template_storage_name = u.template_storage_name "
        "FROM product_template_usage u WHERE u.ad_run_id = a.id "
        "AND a.template_storage_name IS NULL",
        "from product_template_usage.ad_run_id",
    ),
    ("ad_runs", "scheduled_job_run_id"): (
        "UPDATE ad_runs a SET scheduled_job_run_id = r.id FROM scheduled_job_runs r "
        "WHERE a.id = ANY(r.ad_run_ids) AND a.scheduled_job_run_id IS NULL",
        "from scheduled_job_runs.ad_run_ids",
    ),
    ("ad_runs", "scheduled_job_id"): (
        "UPDATE ad_runs a SET scheduled_job_id = r.scheduled_job_id FROM scheduled_job_runs r "
        "WHERE a.id = ANY(r.ad_run_ids) AND a.scheduled_job_id IS NULL",
        "from scheduled_job_runs.ad_run_ids",
    ),
    ("ad_runs", "completed_at"): (
        "UPDATE ad_runs a SET completed_at = r.completed_at FROM scheduled_job_runs r "
        "WHERE a.id = ANY(r.ad_run_ids) AND a.completed_at IS NULL",
        "from the job run's completed_at",
    ),
}


class AdoptionError(AdSchedulerError):
    """The database cannot be adopted as it is; nothing was changed."""


def short_db_error(exc: BaseException) -> str:
    """The driver's own message, first line, without the SQL and parameters SQLAlchemy adds
    (they may hold row values); never the URL."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    kind = type(orig).__name__
    return text if kind in ("Error", "DBAPIError") else f"{kind}: {text}"


@dataclass(frozen=True)
class Blocked:
    """A constraint the existing rows do not satisfy (it was not added)."""

    table: str
    constraint: str
    reason: str
    rows: int
    sample_ids: list[str]

    def __str__(self) -> str:
        ids = ", ".join(self.sample_ids)
        more = f" (e.g. id {ids})" if ids else ""
        return f"{self.table}: {self.constraint} not added: {self.rows} row(s) {self.reason}{more}"


@dataclass
class AdoptionReport:
    """What adoption did (or, in a dry run, would do). Each list holds readable lines."""

    dry_run: bool = False
    tables_adopted: list[str] = field(default_factory=list)
    tables_created: list[str] = field(default_factory=list)
    columns_added: list[str] = field(default_factory=list)
    backfilled: list[str] = field(default_factory=list)
    constraints_added: list[str] = field(default_factory=list)
    constraints_replaced: list[str] = field(default_factory=list)
    indexes_added: list[str] = field(default_factory=list)
    blocked: list[Blocked] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: Columns of the seed's views before they were replaced (for the warnings).
    old_view_columns: dict[str, list[str]] = field(default_factory=dict)

    @property
    def changes(self) -> int:
        """How many changes (a second run on an adopted database makes none)."""
        return sum(
            len(x)
            for x in (
                self.tables_created,
                self.columns_added,
                self.backfilled,
                self.constraints_added,
                self.constraints_replaced,
                self.indexes_added,
                self.replaced,
            )
        )

    def render(self) -> str:
        """The report as text, one section per kind of change."""
        head = "adoption plan (dry run: nothing written)" if self.dry_run else "adopted database"
        sections = [
            ("tables adopted (kept with every row)", self.tables_adopted),
            ("tables created", self.tables_created),
            ("columns added", self.columns_added),
            ("rows backfilled", self.backfilled),
            ("constraints added", self.constraints_added),
            ("constraints replaced", self.constraints_replaced),
            ("indexes added", self.indexes_added),
            ("views / trigger replaced", self.replaced),
            (
                "constraints blocked by existing rows (fix the rows, then run it again)",
                [str(b) for b in self.blocked],
            ),
            ("warnings", self.warnings),
        ]
        lines = [head]
        for title, items in sections:
            if items:
                lines.append(f"{title}:")
                lines.extend(f"  - {item}" for item in items)
        return "\n".join(lines)


# --- introspection -----------------------------------------------------------------------------


def _scalar_list(conn: sa.Connection, sql: str, **params: Any) -> list[Any]:
    return list(conn.execute(sa.text(sql), params).scalars().all())


def existing_tables(conn: sa.Connection) -> set[str]:
    """Base tables of the current schema (any database)."""
    return set(sa.inspect(conn).get_table_names())


def needs_adoption(conn: sa.Connection) -> bool:
    """True when the database holds project/seed tables but no Alembic version: not ours yet."""
    tables = existing_tables(conn)
    if "alembic_version" in tables:
        version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).first()
        if version is not None:
            return False
    return bool(tables & set(Base.metadata.tables))


def _columns(conn: sa.Connection, table: str) -> dict[str, tuple[str, bool, bool]]:
    """name -> (formatted type, nullable, has default)."""
    rows = conn.execute(
        sa.text(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull, "
            "a.atthasdef FROM pg_attribute a WHERE a.attrelid = CAST(:t AS regclass) "
            "AND a.attnum > 0 AND NOT a.attisdropped"
        ),
        {"t": table},
    ).all()
    return {r[0]: (str(r[1]), bool(r[2]), bool(r[3])) for r in rows}


def _constraints(conn: sa.Connection, table: str) -> list[tuple[str, str, list[str], str]]:
    """(name, type p/u/c/f, column names, definition) of a table's constraints."""
    rows = conn.execute(
        sa.text(
            "SELECT c.conname, c.contype::text, "
            "ARRAY(SELECT a.attname::text FROM unnest(c.conkey) k "
            "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k), "
            "pg_get_constraintdef(c.oid) "
            "FROM pg_constraint c WHERE c.conrelid = CAST(:t AS regclass)"
        ),
        {"t": table},
    ).all()
    return [(r[0], r[1], list(r[2] or []), r[3]) for r in rows]


def _fk_targets(conn: sa.Connection, table: str) -> list[tuple[list[str], str]]:
    rows = conn.execute(
        sa.text(
            "SELECT ARRAY(SELECT a.attname::text FROM unnest(c.conkey) k "
            "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k), "
            "c.confrelid::regclass::text FROM pg_constraint c "
            "WHERE c.conrelid = CAST(:t AS regclass) AND c.contype = 'f'"
        ),
        {"t": table},
    ).all()
    return [(list(r[0]), str(r[1])) for r in rows]


def _indexes(conn: sa.Connection, table: str) -> dict[str, tuple[bool, bool, list[str], str]]:
    """name -> (unique, partial, columns, definition); constraint-backed indexes included."""
    rows = conn.execute(
        sa.text(
            "SELECT ic.relname, i.indisunique, i.indpred IS NOT NULL, "
            "ARRAY(SELECT a.attname::text FROM unnest(i.indkey) k "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k), "
            "pg_get_indexdef(i.indexrelid) "
            "FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid "
            "WHERE i.indrelid = CAST(:t AS regclass)"
        ),
        {"t": table},
    ).all()
    return {r[0]: (bool(r[1]), bool(r[2]), list(r[3] or []), r[4]) for r in rows}


def _views(conn: sa.Connection) -> dict[str, str]:
    rows = conn.execute(
        sa.text(
            "SELECT table_name, pg_get_viewdef(CAST(table_name AS regclass), true) "
            "FROM information_schema.views WHERE table_schema = current_schema()"
        )
    ).all()
    return {r[0]: r[1] for r in rows}


def _view_columns(conn: sa.Connection, view: str) -> list[str]:
    return [
        str(c)
        for c in _scalar_list(
            conn,
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = :v ORDER BY ordinal_position",
            v=view,
        )
    ]


def _function_def(conn: sa.Connection) -> str | None:
    return conn.execute(
        sa.text(
            "SELECT pg_get_functiondef(p.oid) FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE p.proname = :f AND n.nspname = current_schema() LIMIT 1"
        ),
        {"f": UPDATED_AT_FUNCTION},
    ).scalar()


def _triggers(conn: sa.Connection, table: str) -> dict[str, str]:
    rows = conn.execute(
        sa.text(
            "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger "
            "WHERE tgrelid = CAST(:t AS regclass) AND NOT tgisinternal"
        ),
        {"t": table},
    ).all()
    return {r[0]: r[1] for r in rows}


def _pg_type(column: sa.Column[Any]) -> str:
    return column.type.compile(dialect=postgresql.dialect()).lower()


def _base_type(formatted: str) -> str:
    return re.sub(r"\(.*?\)", "", formatted).strip()


# --- bookkeeping -------------------------------------------------------------------------------


def _record(
    conn: sa.Connection, kind: str, table: str | None, name: str | None, definition: str | None
) -> None:
    conn.execute(
        sa.text(
            f"INSERT INTO {BOOKKEEPING_TABLE} (kind, table_name, name, definition) "
            "VALUES (:k, :t, :n, :d)"
        ),
        {"k": kind, "t": table, "n": name, "d": definition},
    )


def _recorded(conn: sa.Connection, kind: str) -> list[tuple[str | None, str | None, str | None]]:
    rows = conn.execute(
        sa.text(
            f"SELECT table_name, name, definition FROM {BOOKKEEPING_TABLE} WHERE kind = :k "
            "ORDER BY id"
        ),
        {"k": kind},
    ).all()
    return [(r[0], r[1], r[2]) for r in rows]


def is_adopted(conn: sa.Connection) -> bool:
    """True when this database was adopted (it has the bookkeeping table)."""
    return BOOKKEEPING_TABLE in existing_tables(conn)


def _record_before(conn: sa.Connection, tables: set[str]) -> None:
    """Write down what exists before the project changes anything (once per database)."""
    conn.execute(
        sa.text(
            f"CREATE TABLE {BOOKKEEPING_TABLE} (id serial PRIMARY KEY, kind text NOT NULL, "
            "table_name text, name text, definition text, "
            "recorded_at timestamptz NOT NULL DEFAULT now())"
        )
    )
    conn.execute(
        sa.text(
            f"CREATE TABLE {BACKFILL_TABLE} (table_name text NOT NULL, column_name text NOT NULL, "
            "row_id uuid NOT NULL)"
        )
    )
    for table in sorted(tables):
        _record(conn, "table", table, None, None)
        for column, (_type, nullable, _default) in _columns(conn, table).items():
            _record(conn, "column", table, column, "null" if nullable else "not null")
        for name, _type, _cols, definition in _constraints(conn, table):
            _record(conn, "constraint", table, name, definition)
        for name, (_u, _p, _c, definition) in _indexes(conn, table).items():
            _record(conn, "index", table, name, definition)
        for name, definition in _triggers(conn, table).items():
            _record(conn, "trigger", table, name, definition)
    for name, definition in _views(conn).items():
        if name in SEED_VIEWS:
            _record(conn, "view", None, name, definition)
    function = _function_def(conn)
    if function is not None:
        _record(conn, "function", None, UPDATED_AT_FUNCTION, function)


# --- adoption ----------------------------------------------------------------------------------


def check_adoptable(conn: sa.Connection) -> list[str]:
    """Problems that stop adoption (before anything is written): each names table and column."""
    problems: list[str] = []
    tables = existing_tables(conn)
    for table in Base.metadata.sorted_tables:
        if table.name not in tables:
            continue
        columns = _columns(conn, table.name)
        pk = [c for c in _constraints(conn, table.name) if c[1] == "p"]
        wanted = [c.name for c in table.primary_key.columns]
        if not pk or pk[0][2] != wanted:
            key = ", ".join(wanted)
            problems.append(
                f"{table.name}: needs a primary key on {key} (uuid); add one, e.g. "
                f"ALTER TABLE {table.name} ADD PRIMARY KEY ({key})"
            )
        for column in table.columns:
            if column.name not in columns:
                continue
            have = _base_type(columns[column.name][0])
            want = _pg_type(column)
            if have not in _COMPATIBLE.get(want, {want}):
                problems.append(
                    f"{table.name}.{column.name} is {have}, the project needs {want}; convert "
                    f"it (ALTER TABLE {table.name} ALTER COLUMN {column.name} TYPE {want} "
                    f"USING …) or rename your column, then run `ad-scheduler db upgrade` again"
                )
    return problems


def adopt_schema(
    conn: sa.Connection, tenant_id: uuid.UUID, *, dry_run: bool = False
) -> AdoptionReport:
    """Bring an existing PostgreSQL database to the project's schema, in place.

    Runs inside the caller's transaction (the caller commits, or rolls back for a dry run).

    Raises:
        AdoptionError: Not PostgreSQL, or a pre-existing column has an incompatible type or a
            table lacks a primary key on `id` (the message lists each one and what to do).
    """
    if conn.dialect.name != "postgresql":
        raise AdoptionError(
            "this database has the project's tables but no migration history; adopting an "
            "existing database is supported on PostgreSQL only (start SQLite from an empty file)"
        )
    problems = check_adoptable(conn)
    if problems:
        raise AdoptionError(
            "cannot adopt this database (nothing was changed):\n"
            + "\n".join(f"  - {p}" for p in problems)
        )
    report = AdoptionReport(dry_run=dry_run)
    tables = existing_tables(conn)
    ours = {t.name for t in Base.metadata.sorted_tables}
    adopted = tables & ours
    first_time = BOOKKEEPING_TABLE not in tables
    if first_time:
        _record_before(conn, adopted)
    report.tables_adopted = sorted(t for t, _n, _d in _recorded(conn, "table") if t)

    if first_time:
        _drop_seed_views_and_trigger(conn, adopted, report)
    for table in Base.metadata.sorted_tables:
        if table.name not in tables:
            table.create(conn)
            report.tables_created.append(table.name)
    added = _add_columns(conn, adopted, report)
    _backfill(conn, tenant_id, adopted, added, report)
    for table in Base.metadata.sorted_tables:
        if table.name in adopted:
            _not_null(conn, table, report)
            _checks(conn, table, report)
            _uniques(conn, table, report)
            _foreign_keys(conn, table, report)
            _indexes_for(conn, table, report)
            _foreign_required_columns(conn, table, report)
    if first_time:
        _create_views_and_trigger(conn, report)
    return report


def _drop_seed_views_and_trigger(
    conn: sa.Connection, adopted: set[str], report: AdoptionReport
) -> None:
    views = _views(conn)
    for name in SEED_VIEWS:
        if name in views:
            report.old_view_columns[name] = _view_columns(conn, name)
            conn.execute(sa.text(f"DROP VIEW {name}"))
    for table in sorted(adopted):
        for name in _triggers(conn, table):
            if name == f"update_{table}_updated_at":
                conn.execute(sa.text(f"DROP TRIGGER {name} ON {table}"))
                report.replaced.append(f"trigger {name} on {table}")
    report.replaced[:0] = [f"view {name}" for name in SEED_VIEWS if name in views]


def _create_views_and_trigger(conn: sa.Connection, report: AdoptionReport) -> None:
    for name, sql in VIEW_SQL.items():
        conn.execute(sa.text(sql.format(extra="")))
        ours = _view_columns(conn, name)
        base, alias = VIEW_BASE[name]
        table_columns = _columns(conn, base)
        old = [c for c in report.old_view_columns.get(name, []) if c not in ours]
        kept = [c for c in old if c in table_columns]
        gone = [c for c in old if c not in table_columns]
        if kept:
            conn.execute(sa.text(f"DROP VIEW {name}"))
            extra = "".join(f', {alias}."{c}"' for c in kept)
            conn.execute(sa.text(sql.format(extra=extra)))
        if f"view {name}" not in report.replaced:
            report.replaced.append(f"view {name} (created)")
        elif kept:
            report.replaced.append(f"view {name} keeps the old view's columns {', '.join(kept)}")
        if gone:
            report.warnings.append(
                f"view {name}: the old view's columns {', '.join(gone)} are not in the new one; "
                "queries that read them should read the tables instead"
            )
    conn.execute(sa.text(FUNCTION_SQL))
    for table in UPDATED_AT_TABLES:
        conn.execute(
            sa.text(
                f"CREATE TRIGGER update_{table}_updated_at BEFORE UPDATE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION {UPDATED_AT_FUNCTION}()"
            )
        )
        if not any(r.startswith(f"trigger update_{table}_updated_at") for r in report.replaced):
            report.replaced.append(f"trigger update_{table}_updated_at on {table} (created)")


def _fill_value(column: sa.Column[Any]) -> str | None:
    """A SQL literal that fills a new NOT NULL column without a server default, if sensible."""
    default = column.default
    arg = getattr(default, "arg", None)
    if isinstance(arg, str):
        return "'" + arg.replace("'", "''") + "'"
    if callable(arg):
        name = getattr(arg, "__name__", "")
        if name in ("list", "<lambda>") or "list" in name:
            return "'[]'"
        if name == "dict":
            return "'{}'"
        if name == "utcnow":
            return "now()"
    if isinstance(arg, bool):
        return "true" if arg else "false"
    if isinstance(arg, int):
        return str(arg)
    return None


def _add_columns(
    conn: sa.Connection, adopted: set[str], report: AdoptionReport
) -> dict[str, set[str]]:
    added: dict[str, set[str]] = {}
    for table in Base.metadata.sorted_tables:
        if table.name not in adopted:
            continue
        have = _columns(conn, table.name)
        for column in table.columns:
            if column.name in have:
                continue
            ddl = f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {_pg_type(column)}'
            note = "nullable"
            server_default = column.server_default
            temporary = None
            if server_default is not None:
                text = getattr(server_default, "arg", None)
                sql = text.text if isinstance(text, sa.sql.elements.TextClause) else None
                if sql is None and isinstance(text, str):
                    sql = "'" + text.replace("'", "''") + "'"
                elif sql is None and text is not None:
                    sql = str(text.compile(dialect=conn.dialect))
                ddl += f" DEFAULT {sql}"
                note = f"default {sql}"
            elif not column.nullable:
                temporary = _fill_value(column)
                if temporary is not None:
                    ddl += f" DEFAULT {temporary}"
                    note = f"filled with {temporary}"
            conn.execute(sa.text(ddl))
            if temporary is not None:
                conn.execute(
                    sa.text(f'ALTER TABLE {table.name} ALTER COLUMN "{column.name}" DROP DEFAULT')
                )
            added.setdefault(table.name, set()).add(column.name)
            report.columns_added.append(f"{table.name}.{column.name} {_pg_type(column)} ({note})")
    return added


def _backfill(
    conn: sa.Connection,
    tenant_id: uuid.UUID,
    adopted: set[str],
    added: dict[str, set[str]],
    report: AdoptionReport,
) -> None:
    # Columns that were there before adoption: their emptied values come back on a downgrade.
    before = {(t, n) for t, n, _d in _recorded(conn, "column")}
    for table in Base.metadata.sorted_tables:
        if table.name not in adopted:
            continue
        fills = {"tenant_id": ":t"} if "tenant_id" in table.columns else {}
        for column in table.columns:
            fill = _fill_value(column)
            if not column.nullable and column.server_default is None and fill is not None:
                fills.setdefault(column.name, fill)
        for name, value in fills.items():
            if name in added.get(table.name, set()) and name != "tenant_id":
                continue  # filled when it was added
            where = f'"{name}" IS NULL'
            if (table.name, name) in before:
                # A pre-existing column: remember which rows were empty, for a downgrade.
                conn.execute(
                    sa.text(
                        f"INSERT INTO {BACKFILL_TABLE} (table_name, column_name, row_id) "
                        f"SELECT :table, :column, id FROM {table.name} WHERE {where}"
                    ),
                    {"table": table.name, "column": name},
                )
            count = conn.execute(
                sa.text(f'UPDATE {table.name} SET "{name}" = {value} WHERE {where}'),
                {"t": tenant_id},
            ).rowcount
            if count:
                shown = str(tenant_id) if name == "tenant_id" else value
                report.backfilled.append(f"{table.name}.{name} = {shown}: {count} row(s)")
    # Brands: one per distinct brand_id the products and jobs name (the project's FK target).
    sources = [t for t in ("products", "scheduled_jobs") if t in adopted]
    if sources:
        union = " UNION ".join(f"SELECT brand_id, tenant_id FROM {t}" for t in sources)
        count = conn.execute(
            sa.text(
                "INSERT INTO brands (id, tenant_id, name, colors, created_at, updated_at) "
                "SELECT DISTINCT ON (s.brand_id) s.brand_id, COALESCE(s.tenant_id, :t), "
                "'Brand ' || s.brand_id::text, '[]', now(), now() "
                f"FROM ({union}) s WHERE s.brand_id IS NOT NULL "
                "AND NOT EXISTS (SELECT 1 FROM brands b WHERE b.id = s.brand_id) "
                "ORDER BY s.brand_id"
            ),
            {"t": tenant_id},
        ).rowcount
        if count:
            report.backfilled.append(
                f"brands: {count} row(s) created from the distinct brand_ids of "
                f"{' and '.join(sources)} (named 'Brand <id>'; rename them as you like)"
            )
    for (table_name, column_name), (sql, how) in _DERIVED_BACKFILLS.items():
        if column_name in added.get(table_name, set()):
            count = conn.execute(sa.text(sql)).rowcount
            if count:
                report.backfilled.append(f"{table_name}.{column_name} {how}: {count} row(s)")


def _sample(conn: sa.Connection, table: str, where: str) -> tuple[int, list[str]]:
    count = int(conn.execute(sa.text(f"SELECT count(*) FROM {table} WHERE {where}")).scalar_one())
    ids = _scalar_list(
        conn, f"SELECT id::text FROM {table} WHERE {where} ORDER BY id LIMIT {SAMPLE_ROWS}"
    )
    return count, [str(i) for i in ids]


def _not_null(conn: sa.Connection, table: sa.Table, report: AdoptionReport) -> None:
    have = _columns(conn, table.name)
    for column in table.columns:
        if column.nullable or column.primary_key or not have[column.name][1]:
            continue
        count, ids = _sample(conn, table.name, f'"{column.name}" IS NULL')
        if count:
            report.blocked.append(
                Blocked(
                    table.name, f"NOT NULL on {column.name}", f"have no {column.name}", count, ids
                )
            )
            continue
        conn.execute(sa.text(f'ALTER TABLE {table.name} ALTER COLUMN "{column.name}" SET NOT NULL'))
        report.constraints_added.append(f"{table.name}.{column.name} NOT NULL")


def _constraint_name(conn: sa.Connection, constraint: sa.Constraint) -> str:
    return str(conn.dialect.identifier_preparer.format_constraint(constraint))


def _checks(conn: sa.Connection, table: sa.Table, report: AdoptionReport) -> None:
    existing = _constraints(conn, table.name)
    names = {c[0] for c in existing}
    for check in [c for c in table.constraints if isinstance(c, sa.CheckConstraint)]:
        name = _constraint_name(conn, check)
        if name in names:
            continue
        expr = str(check.sqltext)
        columns = {c.name for c in table.columns if re.search(rf"\b{c.name}\b", expr)}
        count, ids = _sample(conn, table.name, f"NOT ({expr})")
        if count:
            report.blocked.append(
                Blocked(table.name, f"CHECK {name} ({expr})", "do not satisfy it", count, ids)
            )
            continue
        # The seed's narrower checks on the same columns (e.g. run statuses without "skipped")
        # would refuse the project's rows: they are replaced (and restored by a downgrade).
        for old, kind, cols, definition in existing:
            if kind == "c" and cols and set(cols) <= columns and old != name:
                conn.execute(sa.text(f'ALTER TABLE {table.name} DROP CONSTRAINT "{old}"'))
                _record(conn, "dropped_constraint", table.name, old, definition)
                report.constraints_replaced.append(f"{table.name}: {old} {definition} → {name}")
        conn.execute(sa.schema.AddConstraint(check))
        report.constraints_added.append(f"{table.name}: CHECK {name}")


def _uniques(conn: sa.Connection, table: sa.Table, report: AdoptionReport) -> None:
    indexes = _indexes(conn, table.name)
    covered = [
        set(cols) for unique, partial, cols, _d in indexes.values() if unique and not partial
    ]
    for unique in [c for c in table.constraints if isinstance(c, sa.UniqueConstraint)]:
        cols = [c.name for c in unique.columns]
        if set(cols) in covered:
            continue
        name = _constraint_name(conn, unique)
        if _duplicates(conn, table.name, cols=cols, where=None, name=name, report=report):
            continue
        conn.execute(sa.schema.AddConstraint(unique))
        report.constraints_added.append(f"{table.name}: UNIQUE {name} ({', '.join(cols)})")


def _duplicates(
    conn: sa.Connection,
    table: str,
    *,
    cols: list[str],
    where: str | None,
    name: str,
    report: AdoptionReport,
) -> bool:
    key = ", ".join(f'"{c}"' for c in cols)
    filters = " AND ".join([f'"{c}" IS NOT NULL' for c in cols] + ([f"({where})"] if where else []))
    dup = (
        f"({key}) IN (SELECT {key} FROM {table} WHERE {filters} GROUP BY {key} HAVING count(*) > 1)"
    )
    count, ids = _sample(conn, table, f"{filters} AND {dup}")
    if count:
        report.blocked.append(
            Blocked(table, f"UNIQUE {name} ({', '.join(cols)})", "share a value", count, ids)
        )
    return bool(count)


def _foreign_keys(conn: sa.Connection, table: sa.Table, report: AdoptionReport) -> None:
    existing = _fk_targets(conn, table.name)
    for fk in [c for c in table.constraints if isinstance(c, sa.ForeignKeyConstraint)]:
        cols = [c.name for c in fk.columns]
        target = fk.referred_table.name
        if (cols, target) in existing:
            continue
        name = _constraint_name(conn, fk)
        remote = [e.column.name for e in fk.elements]
        pairs = zip(cols, remote, strict=True)
        match = " AND ".join(f'r."{rc}" = {table.name}."{lc}"' for lc, rc in pairs)
        orphan = " AND ".join(f'"{c}" IS NOT NULL' for c in cols)
        count, ids = _sample(
            conn,
            table.name,
            f"{orphan} AND NOT EXISTS (SELECT 1 FROM {target} r WHERE {match})",
        )
        if count:
            report.blocked.append(
                Blocked(
                    table.name,
                    f"FOREIGN KEY {name} ({', '.join(cols)} → {target})",
                    f"point at no {target} row",
                    count,
                    ids,
                )
            )
            continue
        conn.execute(sa.schema.AddConstraint(fk))
        report.constraints_added.append(
            f"{table.name}: FOREIGN KEY {name} ({', '.join(cols)} → {target})"
        )


def _indexes_for(conn: sa.Connection, table: sa.Table, report: AdoptionReport) -> None:
    existing = _indexes(conn, table.name)
    for index in sorted(table.indexes, key=lambda i: str(i.name)):
        name = str(conn.dialect.identifier_preparer.format_index(index))
        if name in existing:
            continue
        cols = [c.name for c in index.columns]
        if index.unique:
            where = index.dialect_options["postgresql"].get("where")
            where_sql = str(where) if where is not None else None
            if _duplicates(conn, table.name, cols=cols, where=where_sql, name=name, report=report):
                continue
        conn.execute(sa.schema.CreateIndex(index))
        report.indexes_added.append(f"{table.name}: {name} ({', '.join(cols)})")


def _foreign_required_columns(conn: sa.Connection, table: sa.Table, report: AdoptionReport) -> None:
    """Warn about the team's own NOT NULL columns without default: the project's inserts skip
    them, so those inserts would fail."""
    for name, (_type, nullable, has_default) in _columns(conn, table.name).items():
        if name not in table.columns and not nullable and not has_default:
            report.warnings.append(
                f"{table.name}.{name} is NOT NULL without a default and unknown to the project: "
                f"its inserts into {table.name} would fail; give it a default "
                f"(ALTER TABLE {table.name} ALTER COLUMN {name} SET DEFAULT …) or drop NOT NULL"
            )


# --- downgrade ---------------------------------------------------------------------------------


def downgrade_adopted(conn: sa.Connection) -> None:
    """Undo adoption: remove only what the project added; restore what it replaced.

    Tables, columns, constraints and indexes recorded as pre-existing stay (with their rows); the
    seed's views, trigger function and triggers are restored from their recorded definitions, and
    replaced CHECK constraints come back `NOT VALID` (rows written meanwhile are not re-checked).
    """
    kept_tables = {t for t, _n, _d in _recorded(conn, "table") if t}
    kept = {
        kind: {(t, n) for t, n, _d in _recorded(conn, kind)}
        for kind in ("column", "constraint", "index")
    }
    for name in SEED_VIEWS:
        conn.execute(sa.text(f"DROP VIEW IF EXISTS {name}"))
    tables = existing_tables(conn)
    for table in UPDATED_AT_TABLES:
        if table in tables:  # recorded ones are re-created from their own definitions below
            conn.execute(sa.text(f"DROP TRIGGER IF EXISTS update_{table}_updated_at ON {table}"))
    # Added constraints on kept tables: foreign keys first (they may point at tables to drop).
    for kind_order in ("f", "c", "u"):
        for table in sorted(kept_tables & tables):
            for name, kind, _cols, _d in _constraints(conn, table):
                if kind == kind_order and (table, name) not in kept["constraint"]:
                    conn.execute(sa.text(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"'))
    for table in sorted(kept_tables & tables):
        for name in _indexes(conn, table):
            if (table, name) not in kept["index"]:
                conn.execute(sa.text(f'DROP INDEX IF EXISTS "{name}"'))
    for table in reversed(Base.metadata.sorted_tables):
        if table.name in tables and table.name not in kept_tables:
            conn.execute(sa.text(f"DROP TABLE {table.name} CASCADE"))
    for table in sorted(kept_tables & tables):
        for column in _columns(conn, table):
            if (table, column) not in kept["column"]:
                conn.execute(sa.text(f'ALTER TABLE {table} DROP COLUMN "{column}"'))
    # NOT NULL that adoption set on a column that allowed NULL before.
    for owner, column_name, was in _recorded(conn, "column"):
        if was == "null" and owner in tables and column_name in _columns(conn, str(owner)):
            conn.execute(sa.text(f'ALTER TABLE {owner} ALTER COLUMN "{column_name}" DROP NOT NULL'))
    backfilled = conn.execute(
        sa.text(f"SELECT DISTINCT table_name, column_name FROM {BACKFILL_TABLE}")
    ).all()
    for owner, column_name in backfilled:
        if column_name not in _columns(conn, owner):
            continue
        conn.execute(
            sa.text(
                f'UPDATE {owner} SET "{column_name}" = NULL WHERE id IN (SELECT row_id FROM '
                f"{BACKFILL_TABLE} WHERE table_name = :t AND column_name = :c)"
            ),
            {"t": owner, "c": column_name},
        )
    for owner, constraint, definition in _recorded(conn, "dropped_constraint"):
        conn.execute(
            sa.text(f'ALTER TABLE {owner} ADD CONSTRAINT "{constraint}" {definition} NOT VALID')
        )
        try:
            with conn.begin_nested():
                conn.execute(sa.text(f'ALTER TABLE {owner} VALIDATE CONSTRAINT "{constraint}"'))
        except sa.exc.DBAPIError:
            pass  # rows the project wrote (e.g. a "skipped" run) stay; new rows are checked
    function = next(iter(_recorded(conn, "function")), None)
    if function is not None and function[2]:
        conn.execute(sa.text(function[2]))
    else:
        conn.execute(sa.text(f"DROP FUNCTION IF EXISTS {UPDATED_AT_FUNCTION}()"))
    for _t, view, definition in _recorded(conn, "view"):
        conn.execute(sa.text(f"CREATE OR REPLACE VIEW {view} AS {definition}"))
    for owner, trigger, definition in _recorded(conn, "trigger"):
        if trigger and definition and trigger not in _triggers(conn, str(owner)):
            conn.execute(sa.text(definition))
    conn.execute(sa.text(f"DROP TABLE {BACKFILL_TABLE}"))
    conn.execute(sa.text(f"DROP TABLE {BOOKKEEPING_TABLE}"))
