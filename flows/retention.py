"""`prune_history`: deletes run history, ads and artifacts older than the retention age.

Deployed from prefect.yaml to run daily. Without it `scheduled_job_runs`, `ad_runs`,
`generated_ads`, `export_deliveries`, the generated files and Prefect's run artifacts grow
without bound. The age is `AD_SCHEDULER_RETENTION_DAYS` (default 180) or the flow's
`retention_days` parameter; what is kept whatever its age (template usage, what the job counters
are derived from, each job's newest run, anything awaiting something) is listed in
`db/queries/retention.py`.

One pass, in batches of `batch_size` rows, each batch its own transaction:

1. ad runs: lock a batch, delete its ad files from storage (the `AdStorage` block), then its
   deliveries, generated-ad rows and ad runs, commit;
2. run-history rows that nothing backs any longer, with their digest deliveries;
3. Prefect artifacts (key `ads-made`) of flow runs due before the cutoff that no longer
   have ad runs in the app database.

Files go before their rows, inside the batch's transaction: if the database goes down mid-way
the batch rolls back, its rows stay (still older than the cutoff, so the next pass deletes them;
a file already gone is not an error), and no row that is kept ever loses its file. A second pass
right after finds nothing to do. Prefect's own tables are pruned by Prefect's server
(`PREFECT_SERVER_SERVICES_DB_VACUUM_*`, see docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated

from prefect import flow, get_run_logger
from prefect.exceptions import ObjectNotFound
from pydantic import BaseModel, Field

from blocks.storage import AdStorage, load_storage
from config import get_settings
from db.queries import retention as queries
from db.session import session_scope
from db.types import utcnow

#: Rows per batch (one transaction each): bounds memory, lock time and what a failure redoes.
DEFAULT_BATCH_SIZE = 500
#: The artifact key of a run's ads table (`flows/artifacts.py`).
RUN_ARTIFACT_KEYS = ("ads-made",)
#: Files deleted at once from storage (each call goes to a thread or a remote store).
FILE_DELETE_CONCURRENCY = 16


class RetentionReport(BaseModel):
    """What one pass deleted (counts), and the cutoff it used."""

    cutoff: datetime
    ad_runs: int = 0
    generated_ads: int = 0
    files: int = 0
    deliveries: int = 0
    job_runs: int = 0
    artifacts: int = 0
    batches: int = 0


#: Called after each step of a batch: ("ad_runs" | "job_runs", "files_deleted" | "committed",
#: rows in the batch). For progress reports; an exception it raises stops the pass.
Progress = Callable[[str, str, int], Awaitable[None]]


async def _no_progress(_phase: str, _step: str, _rows: int) -> None:
    return None


async def _delete_files(storage: AdStorage, paths: list[str]) -> None:
    gate = asyncio.Semaphore(FILE_DELETE_CONCURRENCY)

    async def one(path: str) -> None:
        async with gate:
            await storage.delete_file(path)

    await asyncio.gather(*(one(path) for path in paths))
    # A local folder keeps one directory per ad run: remove the ones this left empty, or a year
    # of history leaves ~100,000 empty directories behind (object stores have none).
    folders = {local.parent for path in paths if (local := storage.local_path(path)) is not None}
    await asyncio.to_thread(_remove_empty, folders)


def _remove_empty(folders: set[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            pass  # not empty (another file was written there) or already gone


async def prune_database(
    cutoff: datetime,
    storage: AdStorage,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress = _no_progress,
    url: str | None = None,
) -> RetentionReport:
    """Delete prunable ad runs (with files) and run-history rows older than `cutoff`.

    Args:
        cutoff: Aware datetime; rows that ended before it may go.
        storage: Where the generated files are.
        batch_size: Rows per transaction (>= 1).
        progress: Awaited after each step of each batch.
        url: The app database (default: from settings).

    Returns:
        Counts of what was deleted.

    Raises:
        ValueError: `batch_size` < 1 or a naive `cutoff`.
        Exception: A database or storage error; what earlier batches committed stays deleted,
            the failing batch is rolled back (a later pass finishes it).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: {batch_size} is not allowed; allowed: 1 or more")
    if cutoff.tzinfo is None:
        raise ValueError("cutoff: a naive datetime is not allowed; allowed: an aware datetime")
    report = RetentionReport(cutoff=cutoff)
    after: uuid.UUID | None = None
    while True:
        async with session_scope(url) as session:
            batch = await queries.take_ad_runs(session, cutoff, batch_size, after)
            if batch.scanned_up_to is None:
                break
            after = batch.scanned_up_to
            if not batch.ad_run_ids:
                continue
            await _delete_files(storage, batch.file_paths)
            await progress("ad_runs", "files_deleted", len(batch.ad_run_ids))
            deleted = await queries.delete_ad_runs(session, batch.ad_run_ids)
        report.files += len(batch.file_paths)
        report.ad_runs += deleted.ad_runs
        report.generated_ads += deleted.generated_ads
        report.deliveries += deleted.deliveries
        report.batches += 1
        await progress("ad_runs", "committed", len(batch.ad_run_ids))
    after = None
    while True:
        async with session_scope(url) as session:
            ids, scanned_up_to = await queries.take_job_runs(session, cutoff, batch_size, after)
            if scanned_up_to is None:
                break
            after = scanned_up_to
            if not ids:
                continue
            runs, deliveries = await queries.delete_job_runs(session, ids)
        report.job_runs += runs
        report.deliveries += deliveries
        report.batches += 1
        await progress("job_runs", "committed", len(ids))
    return report


async def prune_artifacts(
    cutoff: datetime, *, batch_size: int = DEFAULT_BATCH_SIZE, url: str | None = None
) -> int:
    """Delete run artifacts of flow runs due before `cutoff` whose ad runs are gone.

    Returns:
        How many artifacts were deleted.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterId,
    )

    deleted = 0
    kept: set[uuid.UUID] = set()
    page = min(batch_size, 200)  # the API's largest page
    async with get_client() as client:
        while True:
            # Flow runs whose ads are kept are excluded, so every page is new work.
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=list(RUN_ARTIFACT_KEYS))),
                flow_run_filter=FlowRunFilter(
                    expected_start_time=FlowRunFilterExpectedStartTime(before_=cutoff),
                    id=FlowRunFilterId(not_any_=sorted(kept)) if kept else None,
                ),
                limit=page,
            )
            if not artifacts:
                return deleted
            flow_runs = [a.flow_run_id for a in artifacts if a.flow_run_id is not None]
            async with session_scope(url) as session:
                still_used = await queries.flow_runs_with_ads(session, flow_runs)
            kept |= still_used
            for artifact in artifacts:
                if artifact.flow_run_id in still_used:
                    continue
                try:
                    await client.delete_artifact(artifact.id)
                except ObjectNotFound:
                    pass  # deleted by Prefect's own vacuum (or another pass) meanwhile
                deleted += 1


@flow(name="prune-history", log_prints=False)
async def prune_history(
    retention_days: Annotated[int | None, Field(ge=1, le=36500)] = None,
    batch_size: Annotated[int, Field(ge=1, le=10000)] = DEFAULT_BATCH_SIZE,
) -> RetentionReport:
    """Delete run history, ads, files and artifacts older than the retention age (daily).

    Args:
        retention_days: Age in days (default `AD_SCHEDULER_RETENTION_DAYS`, 180).
        batch_size: Rows per transaction.

    Returns:
        What the pass deleted.
    """
    days = retention_days or get_settings().retention_days
    cutoff = utcnow() - timedelta(days=days)
    storage = await load_storage()
    report = await prune_database(cutoff, storage, batch_size=batch_size)
    report.artifacts = await prune_artifacts(cutoff, batch_size=batch_size)
    logger = get_run_logger()
    logger.info(
        "pruned history older than %s days (before %s): %s ad runs, %s ads (%s files), "
        "%s deliveries, %s run rows, %s artifacts in %s batches",
        days,
        cutoff.isoformat(timespec="seconds"),
        report.ad_runs,
        report.generated_ads,
        report.files,
        report.deliveries,
        report.job_runs,
        report.artifacts,
        report.batches,
    )
    return report


if __name__ == "__main__":
    asyncio.run(prune_history())
