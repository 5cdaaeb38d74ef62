"""Misfire grace through the flow: 0 means no limit, so an on-time (or late) run always runs."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from db.models import ScheduledJobRun
from db.session import session_scope
from db.types import utcnow
from domain.params import AdParameters, JobParameters
from tests.flows.support import deployment_for, execute, job_with_templates, scheduled_run

pytestmark = pytest.mark.usefixtures("prefect_api", "use_database", "data_dir")


# The grace rule lives in the flow, not in SQL: one backend is enough (keeps the suite lean).
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_grace_zero_never_skips_a_run(tenant_id) -> None:
    job = await job_with_templates(
        tenant_id,
        templates=2,
        template_count=1,
        misfire_grace_seconds=0,
        parameters=JobParameters(ad=AdParameters(variations=1)).model_dump(mode="json"),
    )
    deployment_id = await deployment_for(f"grace0-{tenant_id.hex[:8]}")

    # The reported case: a run starting a fraction of a second after its slot.
    on_time = await execute(await scheduled_run(deployment_id, job.id, utcnow()))
    late = await execute(await scheduled_run(deployment_id, job.id, utcnow() - timedelta(days=2)))

    assert (on_time.name, late.name) == ("Completed", "Completed")
    async with session_scope() as session:
        rows = (
            await session.scalars(
                sa.select(ScheduledJobRun).where(ScheduledJobRun.scheduled_job_id == job.id)
            )
        ).all()
    assert sorted((r.status, r.skip_reason) for r in rows) == [
        ("completed", None),
        ("completed", None),
    ]
