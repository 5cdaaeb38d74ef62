"""Apply the Alembic migration history from code (the CLI and the tests use this)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import URL

from db.session import resolve_database_url

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: URL | str | None = None) -> Config:
    """An Alembic config pointing at this package's migrations (and at `url`, when given)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("file_template", "%%(year)d%%(month).2d%%(day).2d_%%(rev)s_%%(slug)s")
    if url is not None:
        config.attributes["url"] = url
    return config


def upgrade(url: URL | str | None = None, revision: str = "head") -> None:
    """Migrate the database up to `revision` (blocking; run it off the event loop)."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: URL | str | None = None, revision: str = "base") -> None:
    """Migrate the database down to `revision` (blocking; run it off the event loop)."""
    command.downgrade(alembic_config(url), revision)


async def aupgrade(url: URL | str | None = None, revision: str = "head") -> URL:
    """Resolve the URL, then migrate up in a worker thread; returns the URL migrated."""
    resolved = url if isinstance(url, URL) else await resolve_database_url() if url is None else url
    await asyncio.to_thread(upgrade, resolved, revision)
    from sqlalchemy.engine import make_url

    return make_url(resolved)
