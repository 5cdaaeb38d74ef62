"""The Python SDK: register and manage scheduled jobs, each kept in sync with its deployment.

```python
from scheduler.sdk import AdScheduler

async with AdScheduler(tenant_id) as ads:
    job = await ads.apply({"name": "Monday shoes", "product_id": product_id,
                           "schedule": {"type": "recurring", "cron": "0 9 * * 1",
                                        "timezone": "America/New_York"},
                           "max_runs": 8})
    await ads.pause(job.id, note="holiday")
```

Every call is scoped to the scheduler's tenant: another tenant's job, product or template is
"not found". Writes are *atomic* across the database and the Prefect API: the row changes in
one transaction that commits only after Prefect accepted the deployment change, and a failure
after Prefect changed something undoes it (a new deployment is deleted, a changed one is
converged back to the previous row). They are *idempotent*: re-applying a spec converges the
deployment and writes nothing when nothing differs (no duplicate runs; a paused job stays
paused). Bad input raises `InvalidJobSpec` naming the field, before anything is written.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import io
import logging
import re
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import sqlalchemy as sa
from prefect.client.orchestration import PrefectClient, get_client
from prefect.exceptions import ObjectNotFound, PrefectException, PrefectHTTPStatusError
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession

from blocks.slack_webhook import SlackIncomingWebhook
from db.errors import ConflictError, NotFoundError
from db.models import AdTemplate, Brand, Product, ScheduledJob, ScheduledJobRun
from db.session import dispose_engines, session_scope
from db.types import utcnow
from domain import cron as cron_rules
from domain.errors import AdSchedulerError, FieldProblem, InvalidJobSpec
from domain.spec import (
    JobSpec,
    OneTimeSchedule,
    RecurringSchedule,
    SpecificTemplates,
    UnusedTemplates,
    UploadedTemplates,
)
from domain.vocab import DEFAULT_TEMPLATE_CONCURRENCY, UPLOADS_FOLDER
from scheduler import deployments as dep

if TYPE_CHECKING:
    from scheduler.adopt import JobAdoptionReport

logger = logging.getLogger(__name__)

T = TypeVar("T")
UPLOAD_PREFIX = UPLOADS_FOLDER
SLACK_BLOCK_SLUG = SlackIncomingWebhook.get_block_type_slug()


class PrefectApiError(AdSchedulerError):
    """The Prefect API refused or could not be reached; nothing was changed."""


class DatabaseError(AdSchedulerError):
    """The application database could not be reached or refused the query; nothing changed."""


class StorageError(AdSchedulerError):
    """Template storage refused a write; nothing was changed."""


class JobStateError(AdSchedulerError):
    """The job is in a state that does not allow the operation (e.g. resuming a completed job)."""


def slack_block_name(job_id: uuid.UUID) -> str:
    """Name of the `SlackIncomingWebhook` block holding a job's webhook URL."""
    return f"ad-slack-{job_id}"


@dataclass
class _Catalog:
    """What the spec refers to, checked against the database (read before any write)."""

    product: Product
    brand: Brand
    template_mode: str
    template_count: int
    template_names: builtins.list[str] | None
    exhausted_policy: str
    uploads: builtins.list[tuple[str, bytes, int, int, str]] = field(default_factory=list)


@dataclass
class _Undo:
    """Compensations for Prefect-side changes, run (last first) when a later step fails."""

    steps: builtins.list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def add(self, step: Callable[[], Awaitable[None]]) -> None:
        self.steps.append(step)

    async def run(self) -> None:
        for step in reversed(self.steps):
            try:
                await step()
            except Exception:  # the original error matters more; log and keep undoing
                logger.exception("could not undo a Prefect change after a failed job write")


class AdScheduler:
    """Tenant-scoped, async SDK for scheduled jobs.

    Args:
        tenant_id: Every call acts for this tenant only.
        database_url: The application database (default: settings / `DATABASE_URL`).
        base_deployment: Name of the base deployment of `run-scheduled-job` to copy the work
            pool and pull steps from (default `AD_SCHEDULER_BASE_DEPLOYMENT` or "ad-scheduler").
        work_pool: Work pool when there is no base deployment (default "ad-scheduler-process").

    Use it as `async with AdScheduler(...) as ads:` to share one Prefect client across calls;
    without the context manager each call opens its own.
    """

    def __init__(
        self,
        tenant_id: uuid.UUID | str,
        *,
        database_url: str | None = None,
        base_deployment: str | None = None,
        work_pool: str | None = None,
    ) -> None:
        tenant = _as_uuid(tenant_id)
        if tenant is None:
            raise InvalidJobSpec.one("tenant_id", f"{tenant_id!r} is not a UUID")
        self.tenant_id = tenant
        self._db_url = database_url
        self._base_deployment = base_deployment
        self._work_pool = work_pool
        self._client: PrefectClient | None = None
        self._where: tuple[dep.DeploymentTarget, uuid.UUID] | None = None
        #: Product and brand names for deployment descriptions, filled by the catalog check.
        self._display_names: dict[uuid.UUID, tuple[str, str]] = {}

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
            raise PrefectApiError(f"Prefect API error: {_short(exc)}") from exc

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[AsyncSession]:
        """A database transaction; driver errors become `DatabaseError` (cause chained)."""
        try:
            async with session_scope(self._db_url) as session:
                yield session
        except sa.exc.IntegrityError:
            raise  # a lost race on a unique name: `_write` turns it into a ConflictError
        except (sa.exc.SQLAlchemyError, ConnectionError, TimeoutError, socket.gaierror) as exc:
            raise DatabaseError(database_problem(exc)) from exc

    async def _target(self, client: PrefectClient) -> tuple[dep.DeploymentTarget, uuid.UUID]:
        if self._where is None or self._client is None:
            target = await dep.resolve_target(client, self._base_deployment, self._work_pool)
            flow_id = await client.create_flow_from_name(dep.FLOW_NAME)
            self._where = (target, flow_id)
        return self._where

    async def _load(
        self, session: AsyncSession, job_ref: uuid.UUID | str, *, for_update: bool = False
    ) -> ScheduledJob:
        stmt = sa.select(ScheduledJob).where(
            ScheduledJob.tenant_id == self.tenant_id, ScheduledJob.deleted_at.is_(None)
        )
        ref = _as_uuid(job_ref)
        stmt = stmt.where(ScheduledJob.id == ref if ref else ScheduledJob.name == str(job_ref))
        if for_update:
            stmt = stmt.with_for_update()
        job = (await session.scalars(stmt.limit(2))).first()
        if job is None:
            raise NotFoundError("scheduled job", job_ref)
        return job

    async def _names(self, session: AsyncSession, job: ScheduledJob) -> tuple[str, str]:
        cached = self._display_names.get(job.product_id)
        if cached is not None:
            return cached
        row = (
            await session.execute(
                sa.select(Product.name, Brand.name)
                .join(Brand, Brand.id == Product.brand_id)
                .where(Product.id == job.product_id)
            )
        ).one()
        return str(row[0]), str(row[1])

    # -- validation against the database ----------------------------------------------------

    async def _check_catalog(
        self, session: AsyncSession, spec: JobSpec, job: ScheduledJob | None
    ) -> _Catalog:
        if spec.tenant_id is not None and spec.tenant_id != self.tenant_id:
            raise InvalidJobSpec.one("tenant_id", "must be the tenant this scheduler acts for")
        row = (
            await session.execute(
                sa.select(Product, Brand)
                .join(Brand, Brand.id == Product.brand_id)
                .where(Product.id == spec.product_id, Product.tenant_id == self.tenant_id)
            )
        ).first()
        if row is None:
            raise InvalidJobSpec.one(
                "product_id",
                f"product {spec.product_id} not found; allowed: a product of this tenant",
            )
        product, brand = row
        self._display_names[product.id] = (product.name, brand.name)
        tpl = spec.templates
        if isinstance(tpl, UnusedTemplates):
            catalog = await session.scalar(
                sa.select(sa.func.count())
                .select_from(AdTemplate)
                .where(
                    AdTemplate.tenant_id == self.tenant_id,
                    AdTemplate.active.is_(True),
                    AdTemplate.source == "library",
                    sa.or_(AdTemplate.brand_id.is_(None), AdTemplate.brand_id == brand.id),
                )
            )
            if tpl.count > (catalog or 0):
                raise InvalidJobSpec.one(
                    "templates.count",
                    f"{tpl.count} templates per run but the catalog has {catalog or 0} for this "
                    f"product; allowed: 1..{catalog or 0}",
                )
            return _Catalog(product, brand, "unused", tpl.count, None, tpl.when_exhausted)
        if isinstance(tpl, SpecificTemplates):
            if (
                job is not None
                and job.template_mode == "uploaded"
                and tpl.templates == (job.template_ids or [])
            ):
                # The job's own uploads, as `spec_of` reports them: unchanged.
                return _Catalog(
                    product,
                    brand,
                    "uploaded",
                    len(tpl.templates),
                    list(tpl.templates),
                    job.exhausted_policy,
                )
            names = await self._resolve_templates(session, tpl.templates, brand.id)
            return _Catalog(product, brand, "specific", len(names), names, "recycle")
        assert isinstance(tpl, UploadedTemplates)
        uploads = [_read_upload(i, path) for i, path in enumerate(tpl.files)]
        names = list(dict.fromkeys(u[0] for u in uploads))
        return _Catalog(product, brand, "uploaded", len(names), names, "recycle", uploads)

    async def _check_blocks(self, client: PrefectClient, spec: JobSpec) -> None:
        """Every block the spec names is saved on the Prefect server (else `InvalidJobSpec`
        naming each missing one), so a job never registers only to fail every run."""
        from blocks.email_resend import ResendEmail
        from flows.pipeline import GENERATOR_BLOCK_SLUGS

        wanted: builtins.list[tuple[str, str, tuple[str, ...], str]] = []
        if spec.export.email_block:
            slug = ResendEmail.get_block_type_slug()
            wanted.append(("export.email_block", spec.export.email_block, (slug,), "Resend email"))
        if spec.export.slack_webhook_block:
            wanted.append(
                (
                    "export.slack_webhook_block",
                    spec.export.slack_webhook_block,
                    (SLACK_BLOCK_SLUG,),
                    "Slack webhook",
                )
            )
        if spec.ad.generator_block:
            wanted.append(
                ("ad.generator_block", spec.ad.generator_block, GENERATOR_BLOCK_SLUGS, "generator")
            )
        problems = []
        for path, reference, slugs, label in wanted:
            given_slug, _, name = reference.rpartition("/")
            if given_slug and given_slug not in slugs:
                problems.append(
                    FieldProblem(
                        field=path,
                        message=f"{reference!r} is a {given_slug!r} block; allowed: a "
                        f"{label} block ({', '.join(slugs)})",
                    )
                )
                continue
            if not await _block_exists(client, (given_slug,) if given_slug else slugs, name):
                problems.append(
                    FieldProblem(
                        field=path,
                        message=f"no {label} block named {name!r} is saved on the Prefect "
                        f"server; allowed: the name of a saved {' or '.join(slugs)} block",
                    )
                )
        if problems:
            raise InvalidJobSpec(problems)

    async def _resolve_templates(
        self, session: AsyncSession, refs: Sequence[str], brand_id: uuid.UUID
    ) -> builtins.list[str]:
        ids = [u for u in (_as_uuid(r) for r in refs) if u is not None]
        rows = (
            await session.execute(
                sa.select(AdTemplate.id, AdTemplate.storage_name, AdTemplate.brand_id).where(
                    AdTemplate.tenant_id == self.tenant_id,
                    AdTemplate.active.is_(True),
                    sa.or_(AdTemplate.id.in_(ids), AdTemplate.storage_name.in_(list(refs))),
                )
            )
        ).all()
        by_ref: dict[str, str] = {}
        for tid, name, tpl_brand in rows:
            if tpl_brand is not None and tpl_brand != brand_id:
                continue
            by_ref[str(tid)] = name
            by_ref[name] = name
        missing = [r for r in refs if str(_as_uuid(r) or r) not in by_ref]
        if missing:
            raise InvalidJobSpec.one(
                "templates.templates",
                f"not found: {', '.join(missing)}; allowed: ids or storage names of active "
                "templates of this tenant (and the product's brand)",
            )
        return list(dict.fromkeys(by_ref[str(_as_uuid(r) or r)] for r in refs))

    # -- writes ------------------------------------------------------------------------------

    async def _store_uploads(self, session: AsyncSession, cat: _Catalog) -> None:
        if not cat.uploads:
            return
        from blocks.storage import load_storage

        storage = await load_storage()
        existing = set(
            (
                await session.scalars(
                    sa.select(AdTemplate.storage_name).where(
                        AdTemplate.tenant_id == self.tenant_id,
                        AdTemplate.storage_name.in_([u[0] for u in cat.uploads]),
                    )
                )
            ).all()
        )
        for name, data, width, height, original in cat.uploads:
            # Content-addressed names: writing the same file again is harmless (idempotent).
            try:
                await storage.write(storage.template_path(name), data)
            except (OSError, ValueError) as exc:
                raise StorageError(
                    f"could not store the uploaded template {original} ({type(exc).__name__}); "
                    "check the template storage block or AD_SCHEDULER_DATA_DIR"
                ) from exc
            if name not in existing:
                existing.add(name)
                session.add(
                    AdTemplate(
                        tenant_id=self.tenant_id,
                        storage_name=name,
                        brand_id=cat.brand.id,
                        name=original,
                        width=width,
                        height=height,
                        source="uploaded",
                    )
                )

    async def _store_slack_webhook(
        self, client: PrefectClient, job_id: uuid.UUID, spec: JobSpec, undo: _Undo
    ) -> str | None:
        url = spec.export.slack_webhook_url
        if url is None:
            return None
        name = slack_block_name(job_id)
        try:
            previous = await SlackIncomingWebhook.aload(name, client=client)
        except ValueError:
            previous = None
        block = _webhook_block(url.get_secret_value())
        await block.asave(name, overwrite=True, client=client)
        if previous is None:
            undo.add(lambda: _delete_block(client, name))
        else:
            undo.add(lambda: previous.asave(name, overwrite=True, client=client))
        return name

    def _fill_row(self, job: ScheduledJob, spec: JobSpec, cat: _Catalog, slack: str | None) -> None:
        job.name = spec.name
        job.product_id = cat.product.id
        job.brand_id = cat.brand.id
        job.description = spec.description
        job.max_runs = spec.max_runs
        job.template_mode = cat.template_mode
        job.template_count = cat.template_count
        job.template_ids = cat.template_names
        job.exhausted_policy = cat.exhausted_policy
        if slack is None and spec.export.slack_webhook_block is None and job.parameters:
            # The spec came from `spec_of` (no URL): keep the job's own webhook block.
            slack = job.parameters.get("export", {}).get("slack_webhook_block")
        job.parameters = spec.job_parameters(slack).model_dump(mode="json")
        job.overlap_policy = spec.overlap
        job.misfire_grace_seconds = spec.misfire_grace_seconds
        job.max_consecutive_failures = spec.max_consecutive_failures
        schedule = spec.schedule
        if isinstance(schedule, RecurringSchedule):
            job.schedule_type = "recurring"
            job.cron_expression = schedule.cron
            job.timezone = schedule.timezone
            job.jitter_seconds = schedule.jitter_seconds
            job.scheduled_at = None
        else:
            assert isinstance(schedule, OneTimeSchedule)
            job.schedule_type = "one_time"
            job.cron_expression = None
            job.timezone = schedule.timezone
            job.jitter_seconds = 0
            job.scheduled_at = schedule.at

    async def _converge(
        self,
        client: PrefectClient,
        session: AsyncSession,
        job: ScheduledJob,
        undo: _Undo,
        previous: dep.JobDeployment | None,
    ) -> None:
        """Make the deployment match the row; register how to undo it."""
        target, flow_id = await self._target(client)
        product_name, brand_name = await self._names(session, job)
        plan = dep.plan_for(job, product_name, brand_name)
        old_id = job.prefect_deployment_id
        if previous is None or old_id is None:
            # A new deployment: undoing means deleting it (with its runs).
            new_id = await dep.create_job_deployment(client, plan, target, flow_id)
            undo.add(lambda: dep.remove_job_deployment(client, new_id))
            if plan.one_time_at is not None:
                await dep.converge_one_time_run(client, new_id, plan)
        else:
            undo.add(lambda: _converge_back(client, old_id, previous, target, flow_id))
            new_id = await dep.converge_job_deployment(client, old_id, plan, target, flow_id)
        if new_id != old_id:
            job.prefect_deployment_id = new_id

    async def _write(
        self,
        target: uuid.UUID | str | JobSpec,
        change: Callable[[PrefectClient, AsyncSession, ScheduledJob, _Undo], Awaitable[None]],
        *,
        upsert: bool = False,
    ) -> ScheduledJob:
        """Change one job row and its deployment atomically (see the module docstring).

        `target` is a job id/name, or a spec: then the job of that name is created (or, with
        `upsert`, updated when it exists). One transaction: the row changes are flushed, the
        deployment is changed, and the transaction commits; any failure rolls the row back and
        undoes the Prefect changes.
        """
        undo = _Undo()
        async with self._prefect() as client:
            try:
                async with self._session() as session:
                    previous: dep.JobDeployment | None = None
                    new = False
                    if isinstance(target, JobSpec):
                        found = await self._find_by_name(session, target.name, for_update=True)
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
                        job = await self._load(session, target, for_update=True)
                    if not new and job.prefect_deployment_id is not None:
                        previous = dep.plan_for(job, *await self._names(session, job))
                    await change(client, session, job, undo)
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
                # committed
            except sa.exc.IntegrityError as exc:
                # Another create of the same name won the race (unique live name per tenant).
                await undo.run()
                name = target.name if isinstance(target, JobSpec) else str(target)
                raise ConflictError("scheduled job", "name", name) from exc
            except BaseException:
                await undo.run()
                raise
        return job

    # -- public API --------------------------------------------------------------------------

    async def create(self, spec: JobSpec | dict[str, Any]) -> ScheduledJob:
        """Register a new job; a live job with the same name is a `ConflictError`."""
        parsed = JobSpec.parse(spec)
        return await self._write(parsed, self._apply_spec(parsed))

    async def apply(self, spec: JobSpec | dict[str, Any]) -> ScheduledJob:
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
                existing = await self._find_by_name(session, name.strip()) if name else None
            if existing is None or existing.scheduled_at is None:
                raise
            parsed = JobSpec.parse(spec, existing_scheduled_at=existing.scheduled_at)
        return await self._write(parsed, self._apply_spec(parsed), upsert=True)

    def _apply_spec(
        self, spec: JobSpec
    ) -> Callable[[PrefectClient, AsyncSession, ScheduledJob, _Undo], Awaitable[None]]:
        async def change(
            client: PrefectClient, session: AsyncSession, job: ScheduledJob, undo: _Undo
        ) -> None:
            existing = job.prefect_deployment_id is not None
            cat = await self._check_catalog(session, spec, job if existing else None)
            if existing and spec.product_id != job.product_id:
                raise InvalidJobSpec.one(
                    "product_id",
                    "a job's product cannot change; create a new job for another product",
                )
            await self._check_blocks(client, spec)
            # Validation is complete: from here on, writes.
            slack = await self._store_slack_webhook(client, job.id, spec, undo)
            await self._store_uploads(session, cat)
            self._fill_row(job, spec, cat, slack)

        return change

    async def get(self, job_ref: uuid.UUID | str) -> ScheduledJob:
        """A job by id or name (this tenant's, not deleted)."""
        async with self._session() as session:
            return await self._load(session, job_ref)

    async def list(
        self,
        *,
        brand_id: uuid.UUID | None = None,
        product_id: uuid.UUID | None = None,
        status: str | None = None,
    ) -> builtins.list[ScheduledJob]:
        """This tenant's live jobs, optionally filtered, by name."""
        stmt = sa.select(ScheduledJob).where(
            ScheduledJob.tenant_id == self.tenant_id, ScheduledJob.deleted_at.is_(None)
        )
        if brand_id is not None:
            stmt = stmt.where(ScheduledJob.brand_id == brand_id)
        if product_id is not None:
            stmt = stmt.where(ScheduledJob.product_id == product_id)
        if status is not None:
            stmt = stmt.where(ScheduledJob.status == status)
        async with self._session() as session:
            return builtins.list((await session.scalars(stmt.order_by(ScheduledJob.name))).all())

    async def spec_of(self, job_ref: uuid.UUID | str) -> JobSpec:
        """The spec that describes the job as it is now (round-trips through `apply`)."""
        job = await self.get(job_ref)
        return spec_from_job(job)

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
    ) -> ScheduledJob:
        """Change parts of a job; schedule edits happen in place on the deployment."""
        job = await self.get(job_ref)
        data = spec_from_job(job).model_dump(mode="python")
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
                other = await self._find_by_name(session, spec.name)
            if other is not None and other.id != job.id:
                raise ConflictError("scheduled job", "name", spec.name)
        return await self._write(job.id, self._apply_spec(spec))

    async def pause(self, job_ref: uuid.UUID | str, note: str | None = None) -> ScheduledJob:
        """Stop scheduling runs (manual runs still work); `note` says why."""

        async def change(_c: PrefectClient, _s: AsyncSession, job: ScheduledJob, _u: _Undo) -> None:
            if job.status == "completed":
                raise JobStateError(f"job {job.name!r} is completed; nothing to pause")
            job.status = "paused"
            job.pause_note = note

        return await self._write(job_ref, change)

    async def resume(self, job_ref: uuid.UUID | str) -> ScheduledJob:
        """Schedule runs again (a one-time job whose time has passed runs now, or is a misfire)."""

        async def change(_c: PrefectClient, _s: AsyncSession, job: ScheduledJob, _u: _Undo) -> None:
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

    async def resync(self, job_ref: uuid.UUID | str) -> ScheduledJob:
        """Make the job's deployment match its row again (e.g. after the flow marked the job
        completed or paused it after repeated failures); recreates a missing deployment."""

        async def change(_c: PrefectClient, _s: AsyncSession, _j: ScheduledJob, _u: _Undo) -> None:
            return None

        return await self._write(job_ref, change)

    async def delete(self, job_ref: uuid.UUID | str) -> ScheduledJob:
        """Remove the deployment and its scheduled runs; the job row and its run history stay
        (soft delete), so past runs remain visible."""
        async with self._session() as session:
            job = await self._load(session, job_ref, for_update=True)
            job.deleted_at = utcnow()
        # The row is marked deleted first: a run firing in between sees a deleted job and skips.
        try:
            async with self._prefect() as client:
                await dep.remove_job_deployment(client, job.prefect_deployment_id)
        except BaseException:
            async with self._session() as session:
                await session.execute(
                    sa.update(ScheduledJob).where(ScheduledJob.id == job.id).values(deleted_at=None)
                )
            raise
        slack = (job.parameters or {}).get("export", {}).get("slack_webhook_block")
        if slack == slack_block_name(job.id):
            try:
                async with self._prefect() as client:
                    await _delete_block(client, slack)
            except AdSchedulerError:
                logger.warning("could not delete the Slack webhook block %s", slack)
        return job

    @property
    def database_url(self) -> str | None:
        """The application database this SDK writes to (None: the configured one)."""
        return self._db_url

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
        """Trigger a manual run now (recorded, not counted towards max_runs); its flow run id."""
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

    async def runs(
        self, job_ref: uuid.UUID | str, limit: int = 50
    ) -> builtins.list[ScheduledJobRun]:
        """The job's run history (newest first), deleted jobs included."""
        job_id = (await self.history_job(job_ref)).id
        async with self._session() as session:
            rows = await session.scalars(
                sa.select(ScheduledJobRun)
                .where(
                    ScheduledJobRun.scheduled_job_id == job_id,
                    ScheduledJobRun.tenant_id == self.tenant_id,
                )
                .order_by(
                    sa.func.coalesce(
                        ScheduledJobRun.scheduled_for, ScheduledJobRun.created_at
                    ).desc()
                )
                .limit(limit)
            )
            return builtins.list(rows.all())

    async def history_job(self, job_ref: uuid.UUID | str) -> ScheduledJob:
        """A job by id or name, deleted ones included (for showing run history)."""
        async with self._session() as session:
            ref = _as_uuid(job_ref)
            stmt = sa.select(ScheduledJob).where(ScheduledJob.tenant_id == self.tenant_id)
            stmt = stmt.where(ScheduledJob.id == ref if ref else ScheduledJob.name == str(job_ref))
            # A live job of that name first, then the most recently deleted one.
            stmt = stmt.order_by(
                ScheduledJob.deleted_at.is_(None).desc(), ScheduledJob.deleted_at.desc()
            )
            job = (await session.scalars(stmt)).first()
        if job is None:
            raise NotFoundError("scheduled job", job_ref)
        return job

    async def product_names(self, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str]:
        """Names of this tenant's products, by id (for display)."""
        wanted = builtins.list(ids)
        if not wanted:
            return {}
        async with self._session() as session:
            rows = await session.execute(
                sa.select(Product.id, Product.name).where(
                    Product.tenant_id == self.tenant_id, Product.id.in_(wanted)
                )
            )
            return {pid: name for pid, name in rows.all()}

    async def _find_by_name(
        self, session: AsyncSession, name: str, *, for_update: bool = False
    ) -> ScheduledJob | None:
        stmt = sa.select(ScheduledJob).where(
            ScheduledJob.tenant_id == self.tenant_id,
            ScheduledJob.name == name,
            ScheduledJob.deleted_at.is_(None),
        )
        if for_update:
            stmt = stmt.with_for_update()
        return (await session.scalars(stmt)).first()


class SyncAdScheduler:
    """Blocking facade over `AdScheduler`, for scripts and notebooks without an event loop."""

    def __init__(self, tenant_id: uuid.UUID | str, **kwargs: Any) -> None:
        self._args = (tenant_id, kwargs)

    def _run(self, call: Callable[[AdScheduler], Awaitable[T]]) -> T:
        async def main() -> T:
            try:
                async with AdScheduler(self._args[0], **self._args[1]) as ads:
                    return await call(ads)
            finally:
                await dispose_engines()

        return asyncio.run(main())

    def create(self, spec: JobSpec | dict[str, Any]) -> ScheduledJob:
        """See `AdScheduler.create`."""
        return self._run(lambda a: a.create(spec))

    def apply(self, spec: JobSpec | dict[str, Any]) -> ScheduledJob:
        """See `AdScheduler.apply`."""
        return self._run(lambda a: a.apply(spec))

    def get(self, job_ref: uuid.UUID | str) -> ScheduledJob:
        """See `AdScheduler.get`."""
        return self._run(lambda a: a.get(job_ref))

    def list(self, **filters: Any) -> builtins.list[ScheduledJob]:
        """See `AdScheduler.list`."""
        return self._run(lambda a: a.list(**filters))

    def update(self, job_ref: uuid.UUID | str, **changes: Any) -> ScheduledJob:
        """See `AdScheduler.update`."""
        return self._run(lambda a: a.update(job_ref, **changes))

    def pause(self, job_ref: uuid.UUID | str, note: str | None = None) -> ScheduledJob:
        """See `AdScheduler.pause`."""
        return self._run(lambda a: a.pause(job_ref, note))

    def resume(self, job_ref: uuid.UUID | str) -> ScheduledJob:
        """See `AdScheduler.resume`."""
        return self._run(lambda a: a.resume(job_ref))

    def delete(self, job_ref: uuid.UUID | str) -> ScheduledJob:
        """See `AdScheduler.delete`."""
        return self._run(lambda a: a.delete(job_ref))

    def run_now(self, job_ref: uuid.UUID | str) -> uuid.UUID:
        """See `AdScheduler.run_now`."""
        return self._run(lambda a: a.run_now(job_ref))

    def runs(self, job_ref: uuid.UUID | str, limit: int = 50) -> builtins.list[ScheduledJobRun]:
        """See `AdScheduler.runs`."""
        return self._run(lambda a: a.runs(job_ref, limit))

    def adopt_existing(self, **options: str | None) -> JobAdoptionReport:
        """See `AdScheduler.adopt_existing`."""
        return self._run(lambda a: a.adopt_existing(**options))


# --- helpers ----------------------------------------------------------------------------------


def spec_from_job(job: ScheduledJob) -> JobSpec:
    """The spec of a stored job (uploaded templates appear as their storage names)."""
    schedule: dict[str, Any]
    if job.schedule_type == "recurring":
        schedule = {
            "type": "recurring",
            "cron": job.cron_expression,
            "timezone": job.timezone,
            "jitter_seconds": job.jitter_seconds,
        }
    else:
        schedule = {"type": "one_time", "at": job.scheduled_at, "timezone": job.timezone}
    templates: dict[str, Any]
    if job.template_mode == "unused":
        templates = {
            "mode": "unused",
            "count": job.template_count or 1,
            "when_exhausted": job.exhausted_policy,
        }
    else:
        templates = {"mode": "specific", "templates": list(job.template_ids or [])}
    params = job.parameters or {}
    export = dict(params.get("export", {}))
    data = {
        "name": job.name,
        "product_id": job.product_id,
        "description": job.description,
        "schedule": schedule,
        "max_runs": job.max_runs,
        "templates": templates,
        "ad": params.get("ad", {}),
        "template_concurrency": params.get("template_concurrency", DEFAULT_TEMPLATE_CONCURRENCY),
        "export": export,
        "overlap": job.overlap_policy,
        "misfire_grace_seconds": job.misfire_grace_seconds,
        "max_consecutive_failures": job.max_consecutive_failures,
        "tenant_id": job.tenant_id,
    }
    return JobSpec.parse(data, existing_scheduled_at=job.scheduled_at)


def next_run_for(job: ScheduledJob, now: datetime | None = None) -> datetime | None:
    """When Prefect will start the job's next scheduled run (aware UTC), or None.

    None while the job is paused, completed or deleted. A recurring job: the next time its cron
    fires after `now`, computed by the one cron module (Prefect's own scheduling code: the same
    time the scheduler creates the run for). A one-time job: its time (a resumed one-time job
    whose time has passed runs as soon as a worker picks it up, or is a misfire).
    """
    if (job.status or "active") != "active" or job.deleted_at is not None:
        return None
    if job.schedule_type == "recurring" and job.cron_expression:
        try:
            return cron_rules.next_fire_time(job.cron_expression, job.timezone, after=now)
        except cron_rules.ScheduleError:
            return None  # a stored schedule Prefect would not run (refused at registration)
    if job.schedule_type == "one_time":
        return job.scheduled_at
    return None


#: Seconds the SDK waits for the Prefect API to answer before saying it is unreachable (the
#: client's own retries would otherwise take ~35 s to give up).
PREFECT_PROBE_TIMEOUT = 3.0


#: What to do without a Prefect server (the command exists in every install of the project).
START_SERVER_HINT = "Start a local one with `prefect server start` (API on http://127.0.0.1:4200)"


async def probe_prefect_api(wait_seconds: float = PREFECT_PROBE_TIMEOUT) -> str:
    """Check that the Prefect API in `PREFECT_API_URL` answers; returns its URL.

    Raises:
        PrefectApiError: Not configured, or no healthy answer within `wait_seconds`; the
            message says what was tried and what to do.
    """
    from prefect.settings import PREFECT_API_URL

    url = (PREFECT_API_URL.value() or "").rstrip("/")
    if not url:
        raise PrefectApiError(
            "PREFECT_API_URL is not set, so there is no Prefect server to register jobs with. "
            f"{START_SERVER_HINT} and set PREFECT_API_URL=http://127.0.0.1:4200/api (or point it "
            "at your server)."
        )
    shown = redact_url(url)
    try:
        async with httpx.AsyncClient(timeout=wait_seconds) as http:
            response = await http.get(f"{url}/health")
    except httpx.HTTPError as exc:
        raise PrefectApiError(
            f"cannot reach the Prefect API at {shown} (PREFECT_API_URL): {type(exc).__name__} "
            f"within {wait_seconds:g} s. {START_SERVER_HINT}, or set PREFECT_API_URL to a "
            "running one."
        ) from exc
    if response.status_code != 200:
        raise PrefectApiError(
            f"the Prefect API at {shown} (PREFECT_API_URL) answered {response.status_code} to "
            "/health; check that PREFECT_API_URL ends in /api and the server is healthy "
            f"({START_SERVER_HINT})."
        )
    return url


def database_problem(exc: BaseException) -> str:
    """A one-line description of a database failure, without credentials."""
    orig = getattr(exc, "orig", None) or exc
    detail = (str(orig).strip().splitlines() or [""])[0][:200]
    hint = "check DATABASE_URL and that the database is running"
    if "does not exist" in detail or "no such table" in detail or "UndefinedTable" in repr(orig):
        hint = "run `ad-scheduler db upgrade` to create or migrate the schema"
    return redact_url(f"database error ({type(orig).__name__}: {detail}); {hint}")


def redact_url(text: str) -> str:
    """Text with any password in a URL (`scheme://user:secret@host`) replaced by ***."""
    return re.sub(r"(\w[\w+.-]*://[^:/@\s]+:)[^@\s]+@", r"\1***@", text)


async def _block_exists(client: PrefectClient, slugs: Sequence[str], name: str) -> bool:
    for slug in slugs:
        try:
            await client.read_block_document_by_name(
                name, block_type_slug=slug, include_secrets=False
            )
        except ObjectNotFound:
            continue
        return True
    return False


def _webhook_block(url: str) -> SlackIncomingWebhook:
    return SlackIncomingWebhook(url=SecretStr(url))


async def _delete_block(client: PrefectClient, name: str) -> None:
    try:
        document = await client.read_block_document_by_name(name, block_type_slug=SLACK_BLOCK_SLUG)
    except ObjectNotFound:
        return
    await client.delete_block_document(document.id)


async def _converge_back(
    client: PrefectClient,
    deployment_id: uuid.UUID,
    plan: dep.JobDeployment,
    target: dep.DeploymentTarget,
    flow_id: uuid.UUID,
) -> None:
    await dep.converge_job_deployment(client, deployment_id, plan, target, flow_id)


def _read_upload(index: int, path: Path) -> tuple[str, bytes, int, int, str]:
    from PIL import Image, UnidentifiedImageError

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidJobSpec.one(
            f"templates.files.{index}", f"{path.name} cannot be read ({exc.strerror})"
        ) from exc
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError) as exc:
        raise InvalidJobSpec.one(
            f"templates.files.{index}", f"{path.name} is not a readable image (png, jpg, webp)"
        ) from exc
    digest = hashlib.sha256(data).hexdigest()[:20]
    return f"{UPLOAD_PREFIX}/{digest}{path.suffix.lower()}", data, width, height, path.name


def _as_uuid(value: object) -> uuid.UUID | None:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def _short(exc: BaseException) -> str:
    if isinstance(exc, PrefectHTTPStatusError):
        return f"{exc.response.status_code} {exc.response.text[:300]}"
    return f"{type(exc).__name__}: {exc}"


__all__ = [
    "AdScheduler",
    "DatabaseError",
    "JobStateError",
    "PrefectApiError",
    "SyncAdScheduler",
    "next_run_for",
    "probe_prefect_api",
    "slack_block_name",
    "spec_from_job",
]
