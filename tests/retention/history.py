"""A year of history with every case the retention rules distinguish, and what must survive.

`build_history` writes real rows (and real files in local storage) and returns a `History`
naming the rows that must be kept and those that must go once a pass with `CUTOFF` is done.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from blocks.storage import AdStorage
from db.models import (
    AdRun,
    ExportDelivery,
    GeneratedAd,
    Product,
    ProductTemplateUsage,
    ScheduledJob,
    ScheduledJobRun,
)
from db.session import session_scope
from tests.support.factories import make_ad_run, make_job, make_product

NOW = datetime.now(UTC).replace(microsecond=0)
CUTOFF = NOW - timedelta(days=180)


def days_ago(days: float) -> datetime:
    """An aware UTC time `days` before the test's NOW."""
    return NOW - timedelta(days=days)


@dataclass
class History:
    """Ids written, split by what a pass with CUTOFF must do to them."""

    tenant_id: uuid.UUID
    job_ids: list[uuid.UUID] = field(default_factory=list)
    kept_job_runs: set[uuid.UUID] = field(default_factory=set)
    gone_job_runs: set[uuid.UUID] = field(default_factory=set)
    kept_ad_runs: set[uuid.UUID] = field(default_factory=set)
    gone_ad_runs: set[uuid.UUID] = field(default_factory=set)
    kept_deliveries: set[uuid.UUID] = field(default_factory=set)
    gone_deliveries: set[uuid.UUID] = field(default_factory=set)
    files: dict[uuid.UUID, list[str]] = field(default_factory=dict)
    usage_ids: set[uuid.UUID] = field(default_factory=set)

    def kept_files(self) -> list[str]:
        return [p for run in self.kept_ad_runs for p in self.files.get(run, [])]

    def gone_files(self) -> list[str]:
        return [p for run in self.gone_ad_runs for p in self.files.get(run, [])]


class _Writer:
    def __init__(self, session: AsyncSession, storage: AdStorage, history: History) -> None:
        self.session = session
        self.storage = storage
        self.history = history

    async def run(
        self, job: ScheduledJob, at: datetime, status: str, *, trigger: str = "schedule"
    ) -> ScheduledJobRun:
        row = ScheduledJobRun(
            scheduled_job_id=job.id,
            tenant_id=job.tenant_id,
            flow_run_id=uuid.uuid4(),
            scheduled_for=at,
            started_at=at if status != "skipped" else None,
            completed_at=at + timedelta(minutes=2) if status != "running" else None,
            status=status,
            trigger=trigger,
            skip_reason="misfire" if status == "skipped" else None,
            created_at=at,
        )
        self.session.add(row)
        await self.session.flush()
        return row

    async def ad_run(
        self, product: Product, run: ScheduledJobRun | None, at: datetime, status: str = "completed"
    ) -> AdRun:
        ad_run = await make_ad_run(
            self.session,
            self.history.tenant_id,
            product,
            f"tpl-{uuid.uuid4().hex[:6]}.png",
            job_run=run,
            ads=2,
            status=status,
            flow_run_id=run.flow_run_id if run else uuid.uuid4(),
            created_at=at,
            completed_at=at + timedelta(minutes=1) if status != "running" else None,
        )
        paths = list(
            (
                await self.session.scalars(
                    sa.select(GeneratedAd.storage_path).where(GeneratedAd.ad_run_id == ad_run.id)
                )
            ).all()
        )
        for path in paths:
            await self.storage.write(path, b"\x89PNG fake ad")
        self.history.files[ad_run.id] = paths
        return ad_run

    async def delivery(self, status: str, at: datetime, **subject: Any) -> ExportDelivery:
        row = ExportDelivery(
            tenant_id=self.history.tenant_id,
            channel="email",
            status=status,
            attempts=1,
            created_at=at,
            **subject,
        )
        self.session.add(row)
        await self.session.flush()
        return row


async def build_history(url: str, storage: AdStorage, *, extra_old_runs: int = 0) -> History:
    """Write the cases; `extra_old_runs` adds that many plain prunable manual runs with ads."""
    h = History(tenant_id=uuid.uuid4())
    async with session_scope(url) as session:
        w = _Writer(session, storage, h)
        product = await make_product(session, h.tenant_id)
        job = await make_job(session, h.tenant_id, product, name="weekly")
        streaky = await make_job(session, h.tenant_id, product, name="failing")
        h.job_ids = [job.id, streaky.id]

        # An old completed scheduled run: its row is what runs_completed counts (kept); its ads,
        # files and sent delivery go.
        counted = await w.run(job, days_ago(390), "completed")
        h.kept_job_runs.add(counted.id)
        counted_ads = await w.ad_run(product, counted, days_ago(390))
        h.gone_ad_runs.add(counted_ads.id)
        sent = await w.delivery("sent", days_ago(390), ad_run_id=counted_ads.id)
        h.gone_deliveries.add(sent.id)

        # An old failed scheduled run before a completed one: out of any streak, goes whole.
        failed = await w.run(job, days_ago(400), "failed")
        h.gone_job_runs.add(failed.id)
        h.gone_ad_runs.add((await w.ad_run(product, failed, days_ago(400), "failed")).id)

        # An old misfire with a sent digest delivery: goes with it.
        skipped = await w.run(job, days_ago(395), "skipped")
        h.gone_job_runs.add(skipped.id)
        digest = await w.delivery("sent", days_ago(395), scheduled_job_run_id=skipped.id)
        h.gone_deliveries.add(digest.id)

        # An old manual run (not counted): goes whole.
        manual = await w.run(job, days_ago(385), "completed", trigger="manual")
        h.gone_job_runs.add(manual.id)
        h.gone_ad_runs.add((await w.ad_run(product, manual, days_ago(385))).id)

        # An old ad run the template usage points at: kept, files and all.
        used_run = await w.run(job, days_ago(380), "completed")
        h.kept_job_runs.add(used_run.id)
        used = await w.ad_run(product, used_run, days_ago(380))
        h.kept_ad_runs.add(used.id)
        usage = ProductTemplateUsage(
            product_id=product.id,
            template_storage_name=used.template_storage_name,
            used_at=days_ago(380),
            ad_run_id=used.id,
            tenant_id=h.tenant_id,
        )
        session.add(usage)
        await session.flush()
        h.usage_ids.add(usage.id)

        # An old ad run whose Slack post is unconfirmed (a person must check): kept.
        unsure_run = await w.run(job, days_ago(375), "completed")
        h.kept_job_runs.add(unsure_run.id)
        unsure = await w.ad_run(product, unsure_run, days_ago(375))
        h.kept_ad_runs.add(unsure.id)
        h.kept_deliveries.add(
            (await w.delivery("unconfirmed", days_ago(375), ad_run_id=unsure.id)).id
        )

        # An old run still running (awaiting the reconciler): kept with its ad run.
        stuck = await w.run(job, days_ago(370), "running")
        h.kept_job_runs.add(stuck.id)
        h.kept_ad_runs.add((await w.ad_run(product, stuck, days_ago(370), "running")).id)

        # A manual create-ads ad run (no job run), old: goes; a recent one: kept.
        h.gone_ad_runs.add((await w.ad_run(product, None, days_ago(365))).id)
        h.kept_ad_runs.add((await w.ad_run(product, None, days_ago(3))).id)

        # Recent history: kept whole.
        recent = await w.run(job, days_ago(7), "completed")
        h.kept_job_runs.add(recent.id)
        h.kept_ad_runs.add((await w.ad_run(product, recent, days_ago(7))).id)

        # The failing job, all old: a completed run, then two failures. The first failure is in
        # the streak (kept), the second is also the job's newest run (kept with its ad run).
        c = await w.run(streaky, days_ago(300), "completed")
        h.kept_job_runs.add(c.id)
        h.gone_ad_runs.add((await w.ad_run(product, c, days_ago(300))).id)
        f1 = await w.run(streaky, days_ago(290), "failed")
        h.kept_job_runs.add(f1.id)
        h.gone_ad_runs.add((await w.ad_run(product, f1, days_ago(290), "failed")).id)
        f2 = await w.run(streaky, days_ago(280), "failed")
        h.kept_job_runs.add(f2.id)
        h.kept_ad_runs.add((await w.ad_run(product, f2, days_ago(280), "failed")).id)

        for i in range(extra_old_runs):
            run = await w.run(job, days_ago(360 - i * 0.01), "completed", trigger="manual")
            h.gone_job_runs.add(run.id)
            h.gone_ad_runs.add((await w.ad_run(product, run, days_ago(360 - i * 0.01))).id)
    return h


async def present(url: str, model: Any, ids: set[uuid.UUID]) -> set[uuid.UUID]:
    """Which of `ids` still exist in `model`'s table."""
    if not ids:
        return set()
    async with session_scope(url) as session:
        rows = await session.scalars(sa.select(model.id).where(model.id.in_(ids)))
        return set(rows.all())
