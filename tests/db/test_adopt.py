"""Adopting the team's existing PostgreSQL database with `ad-scheduler db upgrade`.

The database (tests/support/legacy_database.sql) holds the seed's tables, views and trigger, the
team's own `products` / `ad_runs` of another shape, and rows in every table.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from typer.testing import CliRunner

from config import get_settings
from db.migrate import downgrade
from scheduler.cli import app
from tests.conftest import require_postgres
from tests.support.databases import PG_ADMIN_DSN, create_pg_database, drop_pg_database, pg_url
from tests.support.legacy_database import create_legacy_database, snapshot

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("postgres_available")


@pytest_asyncio.fixture
async def legacy_url(postgres_available: bool) -> AsyncIterator[str]:
    """A fresh copy of the team's database."""
    require_postgres(postgres_available)
    name, url = await create_legacy_database()
    try:
        yield url
    finally:
        await drop_pg_database(name)


@pytest.fixture
def on_database(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Point DATABASE_URL at a given database for the CLI."""

    def point(url: str) -> None:
        monkeypatch.setenv("DATABASE_URL", url)
        get_settings.cache_clear()

    yield point
    get_settings.cache_clear()


def _cli_sync(*args: str) -> Any:
    return runner.invoke(app, list(args))


async def _cli(*args: str) -> Any:
    """The CLI runs its own event loop: invoke it from a thread."""
    return await asyncio.to_thread(_cli_sync, *args)


async def _fetch(url: str, sql: str) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return [tuple(r.values()) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


def _without_version(snap: dict[str, Any]) -> dict[str, Any]:
    """A snapshot minus Alembic's own table (a downgrade to base leaves it, empty)."""
    out = dict(snap)
    out["tables"] = [t for t in snap["tables"] if t != "alembic_version"]
    out["rows"] = {t: r for t, r in snap["rows"].items() if t != "alembic_version"}
    for key in ("columns", "constraints", "indexes"):
        out[key] = [row for row in snap[key] if "alembic_version" not in str(row[:2])]
    return out


async def test_dry_run_upgrade_rerun_and_downgrade(
    legacy_url: str, on_database: Any, pg_database_url: str
) -> None:
    tenant = str(uuid.uuid4())
    on_database(legacy_url)
    original = await snapshot(legacy_url)

    # The plan: what would change, and which rows block a constraint; nothing written.
    plan = await _cli("db", "upgrade", "--dry-run", "--tenant", tenant)
    assert plan.exit_code == 0, plan.output
    text = plan.output
    assert "dry run" in text and "nothing written" in text
    for expected in (
        "tables adopted",
        "ad_runs",
        "tables created:",
        "brands",
        "ad_templates",
        "columns added:",
        "products.hooks",
        "scheduled_jobs.timezone text (default 'UTC')",
        f"scheduled_jobs.tenant_id = {tenant}: 6 row(s)",
        "brands: 2 row(s) created",
        "ad_runs.template_storage_name from product_template_usage.ad_run_id: 3 row(s)",
        "scheduled_job_runs_status_check",  # the seed's narrower status check is replaced
        "view v_recent_job_runs",
        "trigger update_scheduled_jobs_updated_at",
        "CHECK ck_ad_runs_status",
        "aaaaaaaa-0000-0000-0000-000000000003",  # the row that blocks it
        # The team's own required column: the project's inserts would not fill it.
        "products.region is NOT NULL without a default",
    ):
        assert expected in text, expected
    assert await snapshot(legacy_url) == original

    # The upgrade: every table and row kept.
    done = await _cli("db", "upgrade", "--tenant", tenant)
    assert done.exit_code == 0, done.output
    assert "database adopted" in done.output
    adopted = await snapshot(legacy_url)
    for table, rows in original["rows"].items():
        assert len(adopted["rows"][table]) == len(rows), table
    kept = await _fetch(
        legacy_url,
        "SELECT id::text, name, sku, tenant_id::text, brand_id::text FROM products ORDER BY id",
    )
    assert [(r[1], r[2]) for r in kept] == [
        ("Trail Runner 2", "TR-2"),
        ("Summit Jacket", "SJ-1"),
        ("Camp Mug", None),
    ]
    assert {r[3] for r in kept} == {tenant}
    brands = await _fetch(legacy_url, "SELECT id::text FROM brands")
    assert {r[0] for r in brands} == {r[4] for r in kept}
    old_runs = await _fetch(
        legacy_url,
        "SELECT trigger, created_at = started_at, tenant_id::text FROM scheduled_job_runs",
    )
    assert old_runs and all(r == ("schedule", True, tenant) for r in old_runs)
    ad_runs = await _fetch(
        legacy_url,
        "SELECT id::text, prompt, template_storage_name, scheduled_job_id IS NOT NULL "
        "FROM ad_runs ORDER BY id",
    )
    assert [r[1:] for r in ad_runs] == [
        ("p1", "tpl-a.png", True),
        ("p2", "templates/tpl-b.png", True),
        (None, "tpl-a.png", True),
    ]
    # The views are the project's own (as a fresh database has them), plus the columns the
    # seed's views had, so queries written for the old views keep working.
    for view, old_columns in (
        ("v_active_scheduled_jobs", ["status", "template_ids", "parameters", "updated_at"]),
        ("v_recent_job_runs", ["logs"]),
    ):
        columns = (
            "SELECT column_name FROM information_schema.columns "
            f"WHERE table_name = '{view}' ORDER BY ordinal_position"
        )
        fresh = [r[0] for r in await _fetch(pg_database_url, columns)]
        assert [r[0] for r in await _fetch(legacy_url, columns)] == fresh + old_columns
    active = await _fetch(
        legacy_url, "SELECT name, product_name, status FROM v_active_scheduled_jobs ORDER BY name"
    )
    assert [r[0] for r in active] == [
        "Black Friday",
        "Broken job",
        "Spring sale",
        "Weekly trail ads",
    ]
    # Runs of the last 7 days (by the run's own time, backfilled into created_at).
    assert await _fetch(legacy_url, "SELECT logs FROM v_recent_job_runs") == [("failed",)]
    # The project's trigger keeps updated_at on a table the seed's trigger did not cover.
    before = await _fetch(legacy_url, "SELECT max(updated_at) FROM scheduled_job_runs")
    await _fetch(legacy_url, "UPDATE scheduled_job_runs SET logs = logs")
    after = await _fetch(legacy_url, "SELECT max(updated_at) FROM scheduled_job_runs")
    assert after[0][0] > before[0][0]
    adopted = await snapshot(legacy_url)

    # Again: nothing changes; the held-back constraint is still reported.
    again = await _cli("db", "upgrade", "--tenant", tenant)
    assert again.exit_code == 0, again.output
    assert "columns added" not in again.output and "CHECK ck_ad_runs_status" in again.output
    assert await snapshot(legacy_url) == adopted

    # Once the blocking row is fixed, the next upgrade adds the constraint.
    await _fetch(legacy_url, "UPDATE ad_runs SET status = 'completed' WHERE status = 'done'")
    fixed = await _cli("db", "upgrade", "--tenant", tenant)
    assert "constraints added" in fixed.output and "ck_ad_runs_status" in fixed.output
    assert "blocked" not in fixed.output

    # Downgrade: the team's tables, columns, rows, views and trigger are back as they were.
    await asyncio.to_thread(downgrade, legacy_url)
    await _fetch(legacy_url, "UPDATE ad_runs SET status = 'done' WHERE prompt IS NULL")
    assert _without_version(await snapshot(legacy_url)) == original


async def test_unadoptable_database_is_refused_with_a_short_message(
    postgres_available: bool, on_database: Any
) -> None:
    require_postgres(postgres_available)
    name = await create_pg_database("adsched_bad")
    url = pg_url(name)
    try:
        dsn = PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
        conn = await asyncpg.connect(dsn)
        await conn.execute("CREATE TABLE products (id text PRIMARY KEY, name text)")
        await conn.close()
        before = await snapshot(url)
        on_database(url)
        result = await _cli("db", "upgrade")
        assert result.exit_code == 1
        assert "products.id is text, the project needs uuid" in result.output
        assert "Traceback" not in result.output and len(result.output.splitlines()) < 6
        assert await snapshot(url) == before
    finally:
        await drop_pg_database(name)


async def test_unreachable_database_is_a_short_error(on_database: Any) -> None:
    on_database("postgresql+asyncpg://postgres@127.0.0.1:5432/adsched_no_such_database")
    result = await _cli("db", "upgrade", "--dry-run")
    assert result.exit_code == 1
    assert "database upgrade failed" in result.output and "DATABASE_URL" in result.output
    assert "Traceback" not in result.output and len(result.output.splitlines()) < 6


def test_sqlite_with_tables_but_no_history_is_refused(tmp_path: Any, on_database: Any) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE scheduled_jobs (id text primary key)")
    on_database(f"sqlite+aiosqlite:///{path}")
    result = _cli_sync("db", "upgrade")
    assert result.exit_code == 1
    assert "PostgreSQL only" in result.output and "Traceback" not in result.output


async def test_two_upgrades_at_once_adopt_once(legacy_url: str) -> None:
    from db.migrate import upgrade

    tenant = uuid.uuid4()
    first, second = await asyncio.gather(
        asyncio.to_thread(upgrade, legacy_url, tenant_id=tenant),
        asyncio.to_thread(upgrade, legacy_url, tenant_id=tenant),
    )
    reports = sorted(
        (r.adoption.changes for r in (first, second) if r.adoption is not None), reverse=True
    )
    assert reports[0] > 0 and reports[1:] == [0]
    brands = await _fetch(legacy_url, "SELECT count(*) FROM brands")
    assert brands == [(2,)]
