"""Apply the Alembic migration history from code (the CLI and the tests use this).

An empty database is migrated by the history. A PostgreSQL database that already holds the
project's or the seed's tables but no migration history (the team's existing database) is
*adopted* first (`db.adopt.adopt_schema`: brought to the models' shape in place, every row
kept) and then stamped at head, in the same transaction. A dry run does the same work and rolls
it back, so its report is exactly what the real run would do.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import URL, make_url

from config import get_settings
from db.adopt import (
    AdoptionError,
    AdoptionReport,
    adopt_schema,
    is_adopted,
    needs_adoption,
    short_db_error,
)
from db.session import new_async_engine, resolve_database_url
from domain.errors import AdSchedulerError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: Transaction-scoped advisory lock held by an upgrade on PostgreSQL ("adsched" in ASCII).
UPGRADE_LOCK_KEY = 0x61647363686564


@dataclass
class UpgradeResult:
    """What `db upgrade` did (or would do, for a dry run).

    Attributes:
        url: The database (render it with `hide_password=True`).
        before: Revisions before (empty for a new or an adopted database).
        after: Revisions after (for a dry run, the target).
        pending: Revisions applied, oldest first (for a dry run: that would be applied).
        adoption: The adoption report when the database was adopted; None otherwise.
        dry_run: True when nothing was written.
    """

    url: URL
    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    pending: list[str] = field(default_factory=list)
    adoption: AdoptionReport | None = None
    dry_run: bool = False


def alembic_config(url: URL | str | None = None) -> Config:
    """An Alembic config pointing at this package's migrations (and at `url`, when given)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("file_template", "%%(year)d%%(month).2d%%(day).2d_%%(rev)s_%%(slug)s")
    if url is not None:
        config.attributes["url"] = url
    return config


def upgrade(
    url: URL | str | None = None,
    revision: str = "head",
    *,
    tenant_id: uuid.UUID | None = None,
    dry_run: bool = False,
) -> UpgradeResult:
    """Migrate (adopting an existing database first) to `revision`; blocking, run it off the
    event loop.

    Args:
        url: The database; None means the configured one.
        revision: Target revision.
        tenant_id: Tenant that rows without one get when an existing database is adopted
            (default: the configured tenant, `AD_SCHEDULER_TENANT_ID`).
        dry_run: Do everything in a transaction and roll it back: nothing is written.

    Raises:
        AdoptionError: The existing database cannot be adopted (the message says why and what
            to do); nothing was changed.
    """
    try:
        return asyncio.run(_upgrade(url, revision, tenant_id, dry_run))
    except AdSchedulerError:
        raise
    except CommandError as exc:
        raise MigrationError(f"database upgrade failed: {exc}") from exc
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        raise MigrationError(
            "database upgrade failed, nothing was changed (it runs in one transaction): "
            f"{short_db_error(exc)}. Check DATABASE_URL and that the database is reachable, "
            "then run `ad-scheduler db upgrade` again (add --dry-run to see the plan first)"
        ) from exc


class MigrationError(AdSchedulerError):
    """The upgrade failed (unreachable database, a refused statement); nothing was changed."""


async def _upgrade(
    url: URL | str | None, revision: str, tenant_id: uuid.UUID | None, dry_run: bool
) -> UpgradeResult:
    try:
        resolved = make_url(url) if url is not None else await resolve_database_url()
    except ValueError as exc:  # says which setting is wrong, never echoes a password
        raise MigrationError(f"{exc}; fix DATABASE_URL and run it again") from None
    tenant = tenant_id or _configured_tenant()
    engine = new_async_engine(resolved)
    try:
        async with engine.connect() as conn:
            result = await conn.run_sync(_upgrade_on, revision, tenant, dry_run)
            if dry_run:
                await conn.rollback()
            else:
                await conn.commit()
    finally:
        await engine.dispose()
    result.url = resolved
    return result


def _configured_tenant() -> uuid.UUID:
    raw = get_settings().tenant_id
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise MigrationError(
            f"AD_SCHEDULER_TENANT_ID: {raw!r} is not a UUID; set it or pass --tenant"
        ) from None


def _heads(conn: sa.Connection) -> tuple[str, ...]:
    return tuple(MigrationContext.configure(conn).get_current_heads())


def _upgrade_on(
    conn: sa.Connection, revision: str, tenant_id: uuid.UUID, dry_run: bool
) -> UpgradeResult:
    if conn.dialect.name == "postgresql":
        # Two upgrades at once queue here: the second then finds the first one's work done.
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": UPGRADE_LOCK_KEY})
    config = alembic_config()
    config.attributes["connection"] = conn
    result = UpgradeResult(url=conn.engine.url, dry_run=dry_run)
    script = ScriptDirectory.from_config(config)
    if needs_adoption(conn):
        if revision != "head":
            raise AdoptionError(
                "this database is not managed by ad-scheduler yet; adopt it with "
                "`ad-scheduler db upgrade` (to head), then migrate to other revisions"
            )
        result.adoption = adopt_schema(conn, tenant_id, dry_run=dry_run)
        # The schema now matches the models, which are the head of the history.
        command.stamp(config, "head")
        result.after = _heads(conn)
        return result
    result.before = _heads(conn)
    target = script.get_revisions(revision)
    pending = [
        rev.revision
        for rev in script.iterate_revisions(tuple(r.revision for r in target if r), result.before)
    ]
    result.pending = list(reversed(pending))
    if dry_run:
        result.after = tuple(r.revision for r in target if r)
        if is_adopted(conn) and not result.pending:
            result.adoption = adopt_schema(conn, tenant_id, dry_run=True)
        return result
    command.upgrade(config, revision)
    result.after = _heads(conn)
    if is_adopted(conn):
        # An adopted database: add what earlier runs held back once the rows allow it (a run
        # with nothing left to do changes nothing).
        result.adoption = adopt_schema(conn, tenant_id, dry_run=dry_run)
    return result


def downgrade(url: URL | str | None = None, revision: str = "base") -> None:
    """Migrate the database down to `revision` (blocking; run it off the event loop).

    On an adopted database, the tables, columns and rows that were there before stay.
    """
    command.downgrade(alembic_config(url), revision)


async def aupgrade(
    url: URL | str | None = None,
    revision: str = "head",
    *,
    tenant_id: uuid.UUID | None = None,
    dry_run: bool = False,
) -> UpgradeResult:
    """`upgrade` in a worker thread (the URL resolved here, so a block name works too)."""
    try:
        resolved = make_url(url) if url is not None else await resolve_database_url()
    except ValueError as exc:
        raise MigrationError(f"{exc}; fix DATABASE_URL and run it again") from None
    return await asyncio.to_thread(
        upgrade, resolved, revision, tenant_id=tenant_id, dry_run=dry_run
    )


__all__ = [
    "AdoptionError",
    "MigrationError",
    "UpgradeResult",
    "alembic_config",
    "aupgrade",
    "downgrade",
    "upgrade",
]
