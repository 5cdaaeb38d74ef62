"""Reading a tenant's jobs and their runs: the database only, no Prefect.

`AdScheduler` (the SDK) is a `JobReader` that also writes; the CLI's read-only commands (`jobs
list`, `jobs show`, `runs`) use a `JobReader` directly, so they never import Prefect. Every read
returns typed read models (`db.read_models`), never ORM rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager

from db.driver import AsyncSession
from db.job_rows import spec_from_row
from db.queries import jobs as q
from db.queries.approvals import approvals_of_job_runs
from db.read_models import JobRunView, JobView, RunApprovalView
from domain.errors import InvalidJobSpec
from domain.spec import JobSpec
from scheduler.db_access import transaction


class JobReader:
    """Tenant-scoped reads of jobs and runs.

    Args:
        tenant_id: Every call acts for this tenant only.
        database_url: The application database (default: settings / `DATABASE_URL`).

    Raises:
        InvalidJobSpec: `tenant_id` is not a UUID.
    """

    def __init__(self, tenant_id: uuid.UUID | str, *, database_url: str | None = None) -> None:
        tenant = q.as_uuid(tenant_id)
        if tenant is None:
            raise InvalidJobSpec.one("tenant_id", f"{tenant_id!r} is not a UUID")
        self.tenant_id = tenant
        self._db_url = database_url

    @property
    def database_url(self) -> str | None:
        """The application database this SDK reads (None: the configured one)."""
        return self._db_url

    def _session(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A database transaction; driver errors become `DatabaseError` (cause chained)."""
        return transaction(self._db_url)

    async def get(self, job_ref: uuid.UUID | str) -> JobView:
        """A job by id or name (this tenant's, not deleted); `NotFoundError` otherwise."""
        async with self._session() as session:
            return JobView.of(await q.load_live_job(session, self.tenant_id, job_ref))

    async def list_jobs(
        self,
        *,
        brand_id: uuid.UUID | None = None,
        product_id: uuid.UUID | None = None,
        status: str | None = None,
    ) -> list[JobView]:
        """This tenant's live jobs, optionally filtered, by name."""
        async with self._session() as session:
            rows = await q.list_live_jobs(
                session, self.tenant_id, brand_id=brand_id, product_id=product_id, status=status
            )
            return [JobView.of(row) for row in rows]

    async def spec_of(self, job_ref: uuid.UUID | str) -> JobSpec:
        """The spec that describes the job as it is now (round-trips through `apply`)."""
        return spec_from_row(await self.get(job_ref))

    async def runs(self, job_ref: uuid.UUID | str, limit: int = 50) -> list[JobRunView]:
        """The job's run history (newest first), deleted jobs included."""
        job_id = (await self.history_job(job_ref)).id
        async with self._session() as session:
            rows = await q.job_runs(session, self.tenant_id, job_id, limit)
            return [JobRunView.of(row) for row in rows]

    async def run_approvals(
        self, job_run_ids: Iterable[uuid.UUID]
    ) -> dict[uuid.UUID, RunApprovalView]:
        """The approval of each of these job runs (`JobRunView.id`), keyed by job run id.

        One query; runs without an approval (their job did not ask for one) are left out, and
        so are runs of another tenant.
        """
        async with self._session() as session:
            rows = await approvals_of_job_runs(session, self.tenant_id, job_run_ids)
            return {row.scheduled_job_run_id: RunApprovalView.of(row) for row in rows}

    async def history_job(self, job_ref: uuid.UUID | str) -> JobView:
        """A job by id or name, deleted ones included (for showing run history)."""
        async with self._session() as session:
            return JobView.of(await q.load_job_with_history(session, self.tenant_id, job_ref))

    async def latest_runs(self, job_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, JobRunView]:
        """The newest run of each of these jobs (jobs without runs are left out)."""
        from db.queries.job_runs import latest_runs

        async with self._session() as session:
            rows = await latest_runs(session, list(job_ids))
            return {job_id: JobRunView.of(row) for job_id, row in rows.items()}

    async def product_names(self, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str]:
        """Names of this tenant's products, by id (for display)."""
        async with self._session() as session:
            return await q.product_names(session, self.tenant_id, ids)
