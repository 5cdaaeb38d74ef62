"""Retention on real PostgreSQL: what is kept, what goes, files, idempotence, an outage mid-way."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
import sqlalchemy as sa

from blocks.storage import AdStorage, default_storage
from config import get_settings
from db.migrate import upgrade
from db.models import AdRun, ExportDelivery, GeneratedAd, ProductTemplateUsage, ScheduledJobRun
from db.queries.job_runs import derive_job_state
from db.session import dispose_engines, session_scope
from flows.retention import prune_database
from tests.conftest import require_postgres
from tests.retention.history import CUTOFF, NOW, History, build_history, present
from tests.support.databases import PG_ADMIN_DSN, create_pg_database, drop_pg_database, pg_url


@pytest.fixture
def storage(data_dir: Path) -> AdStorage:
    return default_storage()


async def _counters(url: str, job_ids: list[uuid.UUID]) -> list[dict[str, object]]:
    out = []
    async with session_scope(url) as session:
        for job_id in job_ids:
            state = asdict(await derive_job_state(session, job_id, now=NOW))
            out.append(state)
    return out


def _exists(storage: AdStorage, paths: list[str]) -> list[bool]:
    results = []
    for path in paths:
        local = storage.local_path(path)
        assert local is not None
        results.append(local.exists())
    return results


async def _assert_final_state(url: str, storage: AdStorage, h: History) -> None:
    assert await present(url, ScheduledJobRun, h.kept_job_runs) == h.kept_job_runs
    assert await present(url, ScheduledJobRun, h.gone_job_runs) == set()
    assert await present(url, AdRun, h.kept_ad_runs) == h.kept_ad_runs
    assert await present(url, AdRun, h.gone_ad_runs) == set()
    assert await present(url, ExportDelivery, h.kept_deliveries) == h.kept_deliveries
    assert await present(url, ExportDelivery, h.gone_deliveries) == set()
    assert await present(url, ProductTemplateUsage, h.usage_ids) == h.usage_ids
    assert all(_exists(storage, h.kept_files()))
    assert not any(_exists(storage, h.gone_files()))
    # The per-ad-run folders of local storage go with their files.
    folders = {storage.local_path(path).parent for path in h.gone_files()}  # type: ignore[union-attr]
    assert not any(folder.exists() for folder in folders)
    async with session_scope(url) as session:
        ads_left = await session.scalar(
            sa.select(sa.func.count())
            .select_from(GeneratedAd)
            .where(GeneratedAd.ad_run_id.in_(h.gone_ad_runs))
        )
    assert ads_left == 0


async def test_prune_keeps_what_jobs_need_and_deletes_the_rest(
    pg_database_url: str, storage: AdStorage
) -> None:
    h = await build_history(pg_database_url, storage)
    counters_before = await _counters(pg_database_url, h.job_ids)
    assert all(_exists(storage, h.gone_files()))

    report = await prune_database(CUTOFF, storage, batch_size=2, url=pg_database_url)

    await _assert_final_state(pg_database_url, storage, h)
    assert report.ad_runs == len(h.gone_ad_runs)
    assert report.job_runs == len(h.gone_job_runs)
    assert report.files == len(h.gone_files())
    assert report.generated_ads == len(h.gone_files())
    assert report.deliveries == len(h.gone_deliveries)
    # runs_completed, the failure streak, last_run_at, next_run_at and status are unchanged.
    assert await _counters(pg_database_url, h.job_ids) == counters_before
    assert counters_before[1]["consecutive_failures"] == 2


async def test_a_second_pass_finds_nothing(pg_database_url: str, storage: AdStorage) -> None:
    h = await build_history(pg_database_url, storage)
    await prune_database(CUTOFF, storage, url=pg_database_url)

    again = await prune_database(CUTOFF, storage, url=pg_database_url)

    assert (again.ad_runs, again.job_runs, again.files, again.deliveries, again.batches) == (
        0,
        0,
        0,
        0,
        0,
    )
    await _assert_final_state(pg_database_url, storage, h)


async def test_bad_arguments_are_refused_before_anything_is_deleted(
    pg_database_url: str, storage: AdStorage
) -> None:
    h = await build_history(pg_database_url, storage)
    with pytest.raises(ValueError, match="batch_size"):
        await prune_database(CUTOFF, storage, batch_size=0, url=pg_database_url)
    with pytest.raises(ValueError, match="cutoff"):
        await prune_database(CUTOFF.replace(tzinfo=None), storage, url=pg_database_url)
    assert await present(pg_database_url, AdRun, h.gone_ad_runs) == h.gone_ad_runs


def test_retention_days_setting_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from config.settings import Settings

    monkeypatch.setenv("AD_SCHEDULER_RETENTION_DAYS", "0")
    with pytest.raises(ValidationError, match="AD_SCHEDULER_RETENTION_DAYS"):
        Settings()
    monkeypatch.setenv("AD_SCHEDULER_RETENTION_DAYS", "30")
    assert Settings().retention_days == 30
    monkeypatch.delenv("AD_SCHEDULER_RETENTION_DAYS")
    assert Settings().retention_days == 180


@pytest_asyncio.fixture
async def own_pg_database(postgres_available: bool) -> AsyncIterator[tuple[str, str]]:
    """A migrated database of this test's own (it is taken down mid-way); (name, url)."""
    require_postgres(postgres_available)
    name = await create_pg_database("adsched_retention")
    url = pg_url(name)
    await asyncio.to_thread(upgrade, url)
    try:
        yield name, url
    finally:
        await dispose_engines()
        await _allow_connections(name, True)
        await drop_pg_database(name)


async def _allow_connections(name: str, allow: bool) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {str(allow).lower()}')
        if not allow:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
            )
    finally:
        await conn.close()


async def test_database_down_mid_way_loses_nothing(
    own_pg_database: tuple[str, str], storage: AdStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, url = own_pg_database
    h = await build_history(url, storage, extra_old_runs=6)
    counters_before = await _counters(url, h.job_ids)
    # Fail at once instead of riding out the outage (the retry policy is tested elsewhere).
    monkeypatch.setenv("AD_SCHEDULER_DB_RETRY_ATTEMPTS", "1")
    get_settings.cache_clear()
    steps: list[tuple[str, str]] = []
    committed: list[int] = []

    async def go_down_in_second_batch(phase: str, step: str, rows: int) -> None:
        steps.append((phase, step))
        if step == "committed":
            committed.append(rows)
        if steps.count(("ad_runs", "files_deleted")) == 2 and step == "files_deleted":
            await _allow_connections(name, False)

    with pytest.raises(Exception) as failure:
        await prune_database(
            CUTOFF, storage, batch_size=3, progress=go_down_in_second_batch, url=url
        )
    assert failure.type is not ValueError
    assert steps[:3] == [
        ("ad_runs", "files_deleted"),
        ("ad_runs", "committed"),
        ("ad_runs", "files_deleted"),
    ]
    await dispose_engines()
    await _allow_connections(name, True)

    # Mid-way: the first batch is gone, the second rolled back; nothing that is kept was touched.
    assert await present(url, AdRun, h.kept_ad_runs) == h.kept_ad_runs
    assert await present(url, ScheduledJobRun, h.kept_job_runs) == h.kept_job_runs
    assert all(_exists(storage, h.kept_files()))
    left = await present(url, AdRun, h.gone_ad_runs)
    assert committed and len(h.gone_ad_runs) - len(left) == committed[0]

    report = await prune_database(CUTOFF, storage, batch_size=3, url=url)

    await _assert_final_state(url, storage, h)
    assert report.ad_runs == len(left)
    assert await _counters(url, h.job_ids) == counters_before
