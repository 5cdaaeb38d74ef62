"""Nothing stays in limbo: the work a run leaves behind, settled by whoever sees it end.

Three parties can end a run, and each calls the same idempotent functions here:

- the run itself, on any exception (`flows/pipeline.py`, `flows/scheduled_job.py`);
- its state hooks, for Failed/Crashed/Cancelled states (`flows/history.py`), including the
  hook a worker runs in a fresh process after the flow process was SIGKILLed;
- the reconciler (`flows/reconcile.py`), for runs no hook saw end (worker and flow killed
  together, a hook that could not reach the database).

`settle_run_work`: ad runs still pending become `failed` with the reason the run ended, claims
are released, and the ad files a dead process wrote without rows are deleted.

`finish_job_run`: a terminal run whose summary was never written (its flow died after making
some ads) gets it from its ad runs: `ad_run_ids`, `templates_used` (completed ad runs: their
usage was confirmed with them, in one transaction), deliveries the run left mid-send are closed
(`db.queries.ad_runs.abandon_pending_deliveries`), and every completed ad run is exported to the
channels it has no delivery for. Called by the reconciler, which runs as a flow (exports are
tasks).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import PurePosixPath

import sqlalchemy as sa
from pydantic import BaseModel

from blocks.storage import AdStorage, load_storage
from db.models import GeneratedAd, ScheduledJob, ScheduledJobRun
from db.queries.ad_runs import (
    SettledWork,
    abandon_pending_deliveries,
    completed_ad_runs_of,
    delivered_channels,
    has_digest_delivery,
    settle_unfinished_ad_runs,
    summarise_job_run,
)
from db.session import session_scope
from domain.params import ExportSettings, JobParameters

logger = logging.getLogger("ad_scheduler.recovery")

#: Exception types whose text can carry connection details: only their type is recorded.
_OPAQUE_MODULES = ("sqlalchemy", "asyncpg", "aiosqlite", "sqlite3", "httpx", "httpcore", "ssl")


def describe_failure(exc: BaseException) -> str:
    """A short reason for a run that stopped on `exc`, safe to store and show.

    Driver and transport errors are named by type only: their text can carry a DSN or a URL.
    """
    kind = type(exc).__name__
    module = type(exc).__module__ or ""
    text = str(exc).strip()
    if not text or module.split(".", 1)[0] in _OPAQUE_MODULES:
        return kind
    return f"{kind}: {text[:500]}"


async def settle_run_work(flow_run_id: uuid.UUID, reason: str) -> SettledWork:
    """Fail the run's unfinished ad runs with `reason`, release its claims, delete orphan files.

    Idempotent; safe to call from the run, a hook and the reconciler alike.
    """
    async with session_scope() as session:
        settled = await settle_unfinished_ad_runs(
            session, flow_run_id=flow_run_id, reason=f"not finished: {reason}"
        )
    if settled.failed_ad_runs:
        await delete_orphan_ads(settled.failed_ad_runs)
    if settled:
        logger.info(
            "flow run %s: %d unfinished ad runs failed, %d claims released",
            flow_run_id,
            len(settled.failed_ad_runs),
            len(settled.released),
        )
    return settled


async def settle_after(flow_run_id: uuid.UUID, exc: BaseException) -> None:
    """`settle_run_work` for a run stopping on `exc`; never raises.

    Called from an `except` block that re-raises `exc`: a failure here (the database is what
    failed) must not replace the run's own error. Its hooks and the reconciler settle later.
    """
    try:
        await asyncio.shield(settle_run_work(flow_run_id, describe_failure(exc)))
    except Exception as settle_error:
        logger.error(
            "flow run %s stopped (%s); settling its work failed too (%s): the reconciler will",
            flow_run_id,
            type(exc).__name__,
            type(settle_error).__name__,
        )


async def delete_orphan_ads(
    ad_runs: list[tuple[uuid.UUID, uuid.UUID]], storage: AdStorage | None = None
) -> int:
    """Delete stored ad files of these (ad run, tenant) pairs that have no `generated_ads` row.

    Best effort (a storage outage must not stop settling the rest): returns the files deleted.
    """
    try:
        storage = storage or await load_storage()
        async with session_scope() as session:
            kept = set(
                (
                    await session.scalars(
                        sa.select(GeneratedAd.storage_path).where(
                            GeneratedAd.ad_run_id.in_([a for a, _t in ad_runs])
                        )
                    )
                ).all()
            )
        deleted = 0
        for ad_run_id, tenant_id in ad_runs:
            folder = str(PurePosixPath(storage.ads_prefix) / str(tenant_id) / str(ad_run_id))
            for path in await storage.list_files(folder):
                if path not in kept:
                    await storage.delete_file(path)
                    deleted += 1
        return deleted
    except Exception as exc:
        logger.warning("could not clean up orphan ad files: %s", type(exc).__name__)
        return 0


class FinishedRun(BaseModel):
    """What `finish_job_run` did for one run."""

    templates_used: list[str]
    deliveries_closed: int = 0
    ad_runs_exported: int = 0


async def finish_job_run(job_run_id: uuid.UUID) -> FinishedRun:
    """Write the summary a dead run never wrote, close its dead deliveries, export the rest.

    Raises whatever the database raises (the reconciler records it per run and goes on).
    """
    async with session_scope() as session:
        row = await session.get(ScheduledJobRun, job_run_id)
        if row is None:
            raise LookupError(f"job run {job_run_id} not found")
        if row.flow_run_id is not None:
            # The run is over: nothing of it is still being worked on.
            await settle_unfinished_ad_runs(
                session, flow_run_id=row.flow_run_id, reason="not finished: the run ended"
            )
        job = await session.get(ScheduledJob, row.scheduled_job_id)
        done = await completed_ad_runs_of(session, job_run_id)
        closed = await abandon_pending_deliveries(
            session, ad_run_ids=[a.id for a in done], job_run_id=job_run_id
        )
        summary = await summarise_job_run(session, job_run_id)
        templates_used = list(summary.templates_used or [])
    exported = 0
    if job is not None and done:
        export = JobParameters.model_validate(job.parameters).export
        exported = await _export_missing(job_run_id, [a.id for a in done], export)
    return FinishedRun(
        templates_used=templates_used, deliveries_closed=closed, ad_runs_exported=exported
    )


async def _export_missing(
    job_run_id: uuid.UUID, ad_run_ids: list[uuid.UUID], export: ExportSettings
) -> int:
    """Export each ad run to the channels it has no delivery row for; returns ad runs exported.

    A channel with a row (sent, failed or closed as unknown) is left alone: sent is never sent
    twice, and a failed one is retried by an explicit export, not silently here.
    """
    if export.destination == "none":
        return 0
    from flows.exports import export_stored_ad_run, export_stored_digest, open_exports

    wanted: set[str] = set()
    if export.wants_email and export.email_mode == "per_ad_run":
        wanted.add("email")
    if export.wants_slack:
        wanted.add("slack")
    async with session_scope() as session:
        have = await delivered_channels(session, ad_run_ids)
        digest_missing = (
            export.wants_email
            and export.email_mode == "digest"
            and not await has_digest_delivery(session, job_run_id)
        )
    exported = 0
    async with open_exports(export) as blocks:
        for ad_run_id in ad_run_ids:
            missing = wanted - have.get(ad_run_id, set())
            if not missing:
                continue
            destination = "both" if missing == {"email", "slack"} else next(iter(missing))
            await export_stored_ad_run(
                ad_run_id, export.model_copy(update={"destination": destination}), blocks=blocks
            )
            exported += 1
        if digest_missing:
            await export_stored_digest(job_run_id, export, blocks=blocks)
    return exported
