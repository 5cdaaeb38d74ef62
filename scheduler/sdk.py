"""The Python SDK: register and manage scheduled jobs, each kept in sync with its deployment.

```python
from scheduler.sdk import AdScheduler

async with AdScheduler(tenant_id) as ads:
    job = await ads.apply({"name": "Monday shoes", "product_id": product_id,
                           "schedule": {"type": "recurring", "cron": "0 9 * * 1",
                                        "timezone": "America/New_York"},
                           "max_runs": 8})
    await ads.pause(job.id, note="holiday")
    brands = await ads.catalog.list_brands()
```

Every call is scoped to the scheduler's tenant: another tenant's job, product or template is
"not found". Writes are *atomic* across the database and the Prefect API: the row changes in
one transaction that commits only after Prefect accepted the deployment change, and a failure
after Prefect changed something undoes it (a new deployment is deleted, a changed one is
converged back to the previous row). They are *idempotent*: re-applying a spec converges the
deployment and writes nothing when nothing differs (no duplicate runs; a paused job stays
paused). Bad input raises `InvalidJobSpec` naming the field, before anything is written.
Reads return typed read models (`db.read_models.JobView`, `JobRunView`), never ORM rows.

The parts live in modules named after what they do: the queries in `db.queries.jobs`, spec ↔ row
in `db.job_rows`, reference checks in `scheduler.spec_checks`, uploads in `scheduler.uploads`,
the Slack secret block in `scheduler.slack_secret`, the undo protocol in `scheduler.undo`, the
blocking facade in `scheduler.sync_sdk`, the catalog in `scheduler.catalog`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import httpx
from prefect.client.orchestration import PrefectClient, get_client
from prefect.exceptions import ObjectNotFound, PrefectException, PrefectHTTPStatusError

from db.driver import AsyncSession, IntegrityError
from db.errors import ConflictError
from db.job_rows import fill_row, next_run_for, spec_from_row
from db.models import ScheduledJob
from db.queries import jobs as q
from db.read_models import JobView
from db.types import utcnow
from domain.errors import AdSchedulerError, InvalidJobSpec
from domain.spec import JobSpec, OneTimeSchedule, RecurringSchedule
from flows import deployment_sync as dep
from scheduler.catalog import CatalogManager
from scheduler.errors import DatabaseError, JobStateError, PrefectApiError, StorageError
from scheduler.job_reads import JobReader
from scheduler.prefect_api import (
    PREFECT_PROBE_TIMEOUT,
    START_SERVER_HINT,
    probe_prefect_api,
    short_prefect_error,
)
from scheduler.slack_secret import delete_slack_block, slack_block_name, store_slack_webhook
from scheduler.spec_checks import check_blocks, check_refs
from scheduler.sync_sdk import SyncAdScheduler
from scheduler.undo import Undo
from scheduler.uploads import store_uploads

if TYPE_CHECKING:
    from scheduler.adopt import JobAdoptionReport

logger = logging.getLogger(__name__)

#: A change to one job row inside `_write` (Prefect client, transaction, the row, the undo list).
Change = Callable[[PrefectClient, AsyncSession, ScheduledJob, Undo], Awaitable[None]]


class AdScheduler(JobReader):
    """Tenant-scoped, async SDK for scheduled jobs (its reads: see `JobReader`).

    Args:
        tenant_id: Every call acts for this tenant only.
        database_url: The application database (default: settings / `DATABASE_URL`).
        base_deployment: Name of the base deployment of `run-scheduled-job` to copy the work
            pool and pull steps from (default `AD_SCHEDULER_BASE_DEPLOYMENT` or "ad-scheduler").
        work_pool: Work pool when there is no base deployment (default "ad-scheduler-process").

    Raises:
        InvalidJobSpec: `tenant_id` is not a UUID.

    Use it as `async with AdScheduler(...) as ads:` to share one Prefect client across calls;
    without the context manager each call opens its own. `ads.catalog` manages brands,
    products and templates (database only, no Prefect needed).
    """

    def __init__(
        self,
        tenant_id: uuid.UUID | str,
        *,
        database_url: str | None = None,
        base_deployment: str | None = None,
        work_pool: str | None = None,
    ) -> None:
        super().__init__(tenant_id, database_url=database_url)
        self._base_deployment = base_deployment
        self._work_pool = work_pool
        self._client: PrefectClient | None = None
        self._where: tuple[dep.DeploymentTarget, uuid.UUID] | None = None
        #: Product and brand names for deployment descriptions, filled by the reference check.
        self._display_names: dict[uuid.UUID, tuple[str, str]] = {}
        self.catalog = CatalogManager(self.tenant_id, database_url=database_url)

    async def __aenter__(self) -> AdScheduler:
        await probe_prefect_api()
        self._client = get_client()
        await self._client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.__aexit__(*exc)

    # -- plumbing ----------------------------------------------------------------------------

    @asynccontextmanager
    async def _prefect(self) -> AsyncIterator[PrefectClient]:
        try:
            if self._client is not None:
                yield self._client
            else:
                await probe_prefect_api()
                async with get_client() as client:
                    yield client
        except (httpx.HTTPError, PrefectHTTPStatusError, PrefectException) as exc:
            raise PrefectApiError(f"Prefect API error: {short_prefect_error(exc)}") from exc

    async def _target(self, client: PrefectClient) -> tuple[dep.DeploymentTarget, uuid.UUID]:
        if self._where is None or self._client is None:
            target = await dep.resolve_target(client, self._base_deployment, self._work_pool)
            flow_id = await client.create_flow_from_name(dep.FLOW_NAME)
            self._where = (target, flow_id)
        return self._where

    async def _names(self, session: AsyncSession, job: ScheduledJob) -> tuple[str, str]:
        cached = self._display_names.get(job.product_id)
        if cached is not None:
            return cached
        return await q.product_and_brand_names(session, job.product_id)

    # -- the one write path --------------------------------------------------------------------

    async def _converge(
        self,
        client: PrefectClient,
        session: AsyncSession,
        job: ScheduledJob,
        undo: Undo,
        previous: dep.JobDeployment | None,
    ) -> None:
        """Make the deployment match the row; register how to undo it."""
        target, flow_id = await self._target(client)
        plan = dep.plan_for(job, *await self._names(session, job))
        old_id = job.prefect_deployment_id
        if previous is None or old_id is None:
            # A new deployment: undoing means deleting it (with its runs).
            new_id = await dep.create_job_deployment(client, plan, target, flow_id)
            undo.add(lambda: dep.remove_job_deployment(client, new_id))
            if plan.one_time_at is not None:
                await dep.converge_one_time_run(client, new_id, plan)
        else:

            async def converge_back() -> None:
                await dep.converge_job_deployment(client, old_id, previous, target, flow_id)

            undo.add(converge_back)
            new_id = await dep.converge_job_deployment(client, old_id, plan, target, flow_id)
        if new_id != old_id:
            job.prefect_deployment_id = new_id

    async def _write(
        self, target: uuid.UUID | str | JobSpec, change: Change, *, upsert: bool = False
    ) -> JobView:
        """Change one job row and its deployment atomically (see the module docstring).

        `target` is a job id/name, or a spec: then the job of that name is created (or, with
        `upsert`, updated when it exists). One transaction: the row changes are flushed, the
        deployment is changed, and the transaction commits; any failure rolls the row back and
        undoes the Prefect changes.
        """
        from flows.ui_sync import absorb_ui_changes  # on use: keeps the CLI's start-up light

        undo = Undo()
        async with self._prefect() as client:
            try:
                async with self._session() as session:
                    previous: dep.JobDeployment | None = None
                    new = False
                    if isinstance(target, JobSpec):
                        found = await q.find_live_job_by_name(
                            session, self.tenant_id, target.name, for_update=True
                        )
                        if found is not None and not upsert:
                            raise ConflictError("scheduled job", "name", target.name)
                        if found is None:
                            new = True
                            job_id = uuid.uuid4()
                            job = ScheduledJob(
                                id=job_id,
                                tenant_id=self.tenant_id,
                                status="active",
                                runs_completed=0,
                                name=target.name,
                                deployment_name=dep.deployment_name(job_id, target.name),
                            )
                        else:
                            job = found
                    else:
                        job = await q.load_live_job(
                            session, self.tenant_id, target, for_update=True
                        )
                    # What a person changed in the Prefect UI is kept, never undone silently.
                    ui = None if new else await absorb_ui_changes(client, session, job)
                    if not new and job.prefect_deployment_id is not None:
                        previous = dep.plan_for(job, *await self._names(session, job))
                    await change(client, session, job, undo)
                    if ui is not None:
                        ui.warn_if_overridden(job)
                    # Every write (create, update, pause, resume, resync) leaves the next run
                    # Prefect will actually start, or none while paused or completed.
                    job.next_run_at = next_run_for(job)
                    if new:
                        # The deployment first, then the INSERT: one statement fewer, and an
                        # INSERT that fails still undoes the deployment.
                        await self._converge(client, session, job, undo, previous)
                        session.add(job)
                        await session.flush()
                    else:
                        await session.flush()
                        await self._converge(client, session, job, undo, previous)
                        await session.flush()
                    view = JobView.of(job)
                # committed
            except IntegrityError as exc:
                # Another create of the same name won the race (unique live name per tenant).
                await undo.run()
                name = target.name if isinstance(target, JobSpec) else str(target)
                raise ConflictError("scheduled job", "name", name) from exc
            except BaseException:
                await undo.run()
                raise
        await self._refresh_board()
        return view

    async def _refresh_board(self) -> None:
        # The job board (a Prefect artifact) shows every job of the tenant; it never fails the
        # change, and a refresh it misses is made by the next change or run.
        from flows.job_board import refresh_job_board_quietly

        await refresh_job_board_quietly(self.tenant_id, database_url=self._db_url)

    def _apply_spec(self, spec: JobSpec) -> Change:
        async def change(
            client: PrefectClient, session: AsyncSession, job: ScheduledJob, undo: Undo
        ) -> None:
            existing = job.prefect_deployment_id is not None
            checked = await check_refs(session, self.tenant_id, spec, job if existing else None)
            self._display_names[checked.refs.product_id] = (
                checked.product_name,
                checked.brand_name,
            )
            if existing and spec.product_id != job.product_id:
                raise InvalidJobSpec.one(
                    "product_id",
                    "a job's product cannot change; create a new job for another product",
                )
            await check_blocks(client, spec)
            # Validation is complete: from here on, writes.
            slack = None
            if spec.export.slack_webhook_url is not None:
                slack = await store_slack_webhook(
                    client, job.id, spec.export.slack_webhook_url, undo
                )
            await store_uploads(session, self.tenant_id, checked.refs.brand_id, checked.uploads)
            fill_row(job, spec, checked.refs, slack)

        return change

    # -- public API: writes ----------------------------------------------------------------------

    async def create(self, spec: JobSpec | dict[str, Any]) -> JobView:
        """Register a new job; a live job with the same name is a `ConflictError`."""
        parsed = JobSpec.parse(spec)
        return await self._write(parsed, self._apply_spec(parsed))

    async def apply(self, spec: JobSpec | dict[str, Any]) -> JobView:
        """Create the job, or update the live job of the same name to match the spec.

        Idempotent: applying the same spec again changes nothing (no duplicate runs; a paused
        job stays paused, a completed one stays completed).
        """
        try:
            parsed = JobSpec.parse(spec)
        except InvalidJobSpec:
            # A one-time job whose time has passed may be re-applied unchanged: retry with the
            # stored time as the allowed past value.
            name = spec.name if isinstance(spec, JobSpec) else str(dict(spec).get("name", ""))
            async with self._session() as session:
                existing = (
                    await q.find_live_job_by_name(session, self.tenant_id, name.strip())
                    if name
                    else None
                )
            if existing is None or existing.scheduled_at is None:
                raise
            parsed = JobSpec.parse(spec, existing_scheduled_at=existing.scheduled_at)
        return await self._write(parsed, self._apply_spec(parsed), upsert=True)

    async def update(
        self,
        job_ref: uuid.UUID | str,
        *,
        name: str | None = None,
        description: str | None = None,
        schedule: dict[str, Any] | RecurringSchedule | OneTimeSchedule | None = None,
        max_runs: int | None = None,
        templates: dict[str, Any] | Any = None,
        ad: dict[str, Any] | Any = None,
        export: dict[str, Any] | Any = None,
        overlap: str | None = None,
        misfire_grace_seconds: int | None = None,
        template_concurrency: int | None = None,
    ) -> JobView:
        """Change parts of a job (None: unchanged); schedule edits happen in place on the
        deployment. Raises `InvalidJobSpec`, `ConflictError` (name taken), `NotFoundError`."""
        job = await self.get(job_ref)
        data = spec_from_row(job).model_dump(mode="python")
        changes = {
            "name": name,
            "description": description,
            "schedule": schedule,
            "max_runs": max_runs,
            "templates": templates,
            "ad": ad,
            "export": export,
            "overlap": overlap,
            "misfire_grace_seconds": misfire_grace_seconds,
            "template_concurrency": template_concurrency,
        }
        for key, value in changes.items():
            if value is not None:
                data[key] = (
                    value.model_dump(mode="python") if hasattr(value, "model_dump") else value
                )
        spec = JobSpec.parse(data, existing_scheduled_at=job.scheduled_at)
        if name is not None and name.strip() != job.name:
            async with self._session() as session:
                other = await q.find_live_job_by_name(session, self.tenant_id, spec.name)
            if other is not None and other.id != job.id:
                raise ConflictError("scheduled job", "name", spec.name)
        return await self._write(job.id, self._apply_spec(spec))

    async def pause(self, job_ref: uuid.UUID | str, note: str | None = None) -> JobView:
        """Stop scheduling runs (manual runs still work); `note` says why."""

        async def change(_c: PrefectClient, _s: AsyncSession, job: ScheduledJob, _u: Undo) -> None:
            if job.status == "completed":
                raise JobStateError(f"job {job.name!r} is completed; nothing to pause")
            job.status = "paused"
            job.pause_note = note

        return await self._write(job_ref, change)

    async def resume(self, job_ref: uuid.UUID | str) -> JobView:
        """Schedule runs again (a one-time job whose time has passed runs now, or is a misfire)."""

        async def change(_c: PrefectClient, _s: AsyncSession, job: ScheduledJob, _u: Undo) -> None:
            if job.status == "completed":
                raise JobStateError(
                    f"job {job.name!r} is completed; raise max_runs or reschedule it instead"
                )
            job.status = "active"
            job.pause_note = None
            job.consecutive_failures = 0
            # Failures before now no longer count toward an automatic pause.
            job.resumed_at = utcnow()

        return await self._write(job_ref, change)

    async def resync(self, job_ref: uuid.UUID | str) -> JobView:
        """Make the job's deployment match its row again (e.g. after the flow marked the job
        completed or paused it after repeated failures); recreates a missing deployment."""

        async def change(_c: PrefectClient, _s: AsyncSession, _j: ScheduledJob, _u: Undo) -> None:
            return None

        return await self._write(job_ref, change)

    async def delete(self, job_ref: uuid.UUID | str) -> JobView:
        """Remove the deployment and its scheduled runs; the job row and its run history stay
        (soft delete), so past runs remain visible."""
        async with self._session() as session:
            job = JobView.of(await q.mark_job_deleted(session, self.tenant_id, job_ref))
        # The row is marked deleted first: a run firing in between sees a deleted job and skips.
        try:
            async with self._prefect() as client:
                await dep.remove_job_deployment(client, job.prefect_deployment_id)
        except BaseException:
            async with self._session() as session:
                await q.undelete_job(session, job.id)
            raise
        slack = (job.parameters or {}).get("export", {}).get("slack_webhook_block")
        if slack == slack_block_name(job.id):
            try:
                async with self._prefect() as client:
                    await delete_slack_block(client, slack)
            except AdSchedulerError:
                logger.warning("could not delete the Slack webhook block %s", slack)
        await self._refresh_board()
        return job

    async def adopt_existing(
        self, *, email_block: str | None = None, slack_webhook_block: str | None = None
    ) -> JobAdoptionReport:
        """Give each of the tenant's rows without a deployment (jobs of an adopted database)
        its deployment; rows that cannot be adopted are reported and left untouched.

        See `scheduler.adopt.adopt_jobs`.
        """
        from scheduler.adopt import adopt_jobs

        return await adopt_jobs(
            self, email_block=email_block, slack_webhook_block=slack_webhook_block
        )

    async def run_now(
        self, job_ref: uuid.UUID | str, idempotency_key: str | None = None
    ) -> uuid.UUID:
        """Trigger a manual run now (recorded, not counted towards max_runs); its flow run id.

        Raises:
            JobStateError: The job has no deployment (apply it again).
        """
        job = await self.get(job_ref)
        if job.prefect_deployment_id is None:
            raise JobStateError(f"job {job.name!r} has no deployment; apply it again")
        async with self._prefect() as client:
            try:
                run = await dep.trigger_run(
                    client, job.prefect_deployment_id, job.id, idempotency_key
                )
            except ObjectNotFound as exc:
                raise JobStateError(
                    f"the deployment of job {job.name!r} is missing; apply the job again"
                ) from exc
        return run.id

    # -- approvals (approval hook: thin delegations to scheduler/approvals.py) -----------------

    async def approvals(self, *, include_decided: bool = False) -> list[Any]:
        """Runs awaiting approval (`ApprovalView`s); see `scheduler.approvals.list_pending`."""
        from scheduler import approvals

        return await approvals.list_pending(
            self.tenant_id, database_url=self._db_url, include_decided=include_decided
        )

    async def approval(self, run: uuid.UUID | str) -> Any:
        """One run's approval with its ads; see `scheduler.approvals.show`."""
        from scheduler import approvals

        return await approvals.show(self.tenant_id, run, database_url=self._db_url)

    async def decide(self, run: uuid.UUID | str, **decision: Any) -> Any:
        """Approve/reject a waiting run's ads (`approve=`, `reject=`, `note=`, `reviewer=`)."""
        from scheduler import approvals

        return await approvals.decide(self.tenant_id, run, database_url=self._db_url, **decision)


def spec_from_job(job: Any) -> JobSpec:
    """The spec of a stored job: see `db.job_rows.spec_from_row` (kept for callers)."""
    return spec_from_row(job)


__all__ = [
    "PREFECT_PROBE_TIMEOUT",
    "START_SERVER_HINT",
    "AdScheduler",
    "DatabaseError",
    "JobReader",
    "JobStateError",
    "PrefectApiError",
    "StorageError",
    "SyncAdScheduler",
    "next_run_for",
    "probe_prefect_api",
    "slack_block_name",
    "spec_from_job",
]
