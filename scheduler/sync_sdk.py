"""A blocking facade over `AdScheduler`, for scripts and notebooks without an event loop."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from db.read_models import JobRunView, JobView

if TYPE_CHECKING:
    from domain.spec import JobSpec
    from scheduler.adopt import JobAdoptionReport
    from scheduler.sdk import AdScheduler

T = TypeVar("T")


class SyncAdScheduler:
    """Blocking facade over `AdScheduler`: each call runs on its own event loop.

    Args:
        tenant_id: As for `AdScheduler`.
        **kwargs: `AdScheduler`'s keyword options (database_url, base_deployment, work_pool).
    """

    def __init__(self, tenant_id: uuid.UUID | str, **kwargs: Any) -> None:
        self._args = (tenant_id, kwargs)

    def _run(self, call: Callable[[AdScheduler], Awaitable[T]]) -> T:
        from db.session import dispose_engines
        from scheduler.sdk import AdScheduler

        async def main() -> T:
            try:
                async with AdScheduler(self._args[0], **self._args[1]) as ads:
                    return await call(ads)
            finally:
                await dispose_engines()

        return asyncio.run(main())

    def create(self, spec: JobSpec | dict[str, Any]) -> JobView:
        """See `AdScheduler.create`."""
        return self._run(lambda a: a.create(spec))

    def apply(self, spec: JobSpec | dict[str, Any]) -> JobView:
        """See `AdScheduler.apply`."""
        return self._run(lambda a: a.apply(spec))

    def get(self, job_ref: uuid.UUID | str) -> JobView:
        """See `AdScheduler.get`."""
        return self._run(lambda a: a.get(job_ref))

    def list_jobs(self, **filters: Any) -> list[JobView]:
        """See `AdScheduler.list_jobs`."""
        return self._run(lambda a: a.list_jobs(**filters))

    def update(self, job_ref: uuid.UUID | str, **changes: Any) -> JobView:
        """See `AdScheduler.update`."""
        return self._run(lambda a: a.update(job_ref, **changes))

    def pause(self, job_ref: uuid.UUID | str, note: str | None = None) -> JobView:
        """See `AdScheduler.pause`."""
        return self._run(lambda a: a.pause(job_ref, note))

    def resume(self, job_ref: uuid.UUID | str) -> JobView:
        """See `AdScheduler.resume`."""
        return self._run(lambda a: a.resume(job_ref))

    def delete(self, job_ref: uuid.UUID | str) -> JobView:
        """See `AdScheduler.delete`."""
        return self._run(lambda a: a.delete(job_ref))

    def run_now(self, job_ref: uuid.UUID | str) -> uuid.UUID:
        """See `AdScheduler.run_now`."""
        return self._run(lambda a: a.run_now(job_ref))

    def runs(self, job_ref: uuid.UUID | str, limit: int = 50) -> list[JobRunView]:
        """See `AdScheduler.runs`."""
        return self._run(lambda a: a.runs(job_ref, limit))

    def adopt_existing(self, **options: str | None) -> JobAdoptionReport:
        """See `AdScheduler.adopt_existing`."""
        return self._run(lambda a: a.adopt_existing(**options))
