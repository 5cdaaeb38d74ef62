"""Job spec ↔ `scheduled_jobs` row: one inverse pair, and the row's next run.

`fill_row(job, spec, refs, slack_block)` writes a validated spec into a row; `spec_from_row(job)`
reads it back. They are inverses (tested by round trip) for every spec except what storage
deliberately changes: uploaded files become the storage names of their templates (mode
`specific`), a Slack webhook URL becomes the name of the block that holds it, and template
references become the storage names they resolved to.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from domain import cron as cron_rules
from domain.spec import JobSpec, OneTimeSchedule, RecurringSchedule


@dataclass(frozen=True)
class ResolvedRefs:
    """What a spec refers to, as the database resolved it (read before any write).

    Attributes:
        product_id: The tenant's product.
        brand_id: That product's brand.
        template_mode: `unused`, `specific` or `uploaded`.
        template_count: Templates per run.
        template_names: Storage names (specific/uploaded), None for `unused`.
        exhausted_policy: `recycle`, `skip` or `fail` (what `unused` does when none are left).
    """

    product_id: uuid.UUID
    brand_id: uuid.UUID
    template_mode: str
    template_count: int
    template_names: list[str] | None
    exhausted_policy: str


class JobRow(Protocol):
    """The columns `spec_from_row` and `next_run_for` read (an ORM row or a `JobView`)."""

    @property
    def tenant_id(self) -> uuid.UUID | None: ...
    @property
    def product_id(self) -> uuid.UUID: ...
    @property
    def name(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def schedule_type(self) -> str: ...
    @property
    def cron_expression(self) -> str | None: ...
    @property
    def timezone(self) -> str: ...
    @property
    def jitter_seconds(self) -> int: ...
    @property
    def scheduled_at(self) -> datetime | None: ...
    @property
    def max_runs(self) -> int | None: ...
    @property
    def status(self) -> str | None: ...
    @property
    def deleted_at(self) -> datetime | None: ...
    @property
    def template_mode(self) -> str: ...
    @property
    def template_count(self) -> int | None: ...
    @property
    def template_ids(self) -> list[str] | None: ...
    @property
    def exhausted_policy(self) -> str: ...
    @property
    def parameters(self) -> dict[str, Any]: ...
    @property
    def overlap_policy(self) -> str: ...
    @property
    def misfire_grace_seconds(self) -> int: ...
    @property
    def max_consecutive_failures(self) -> int: ...


def fill_row(job: Any, spec: JobSpec, refs: ResolvedRefs, slack_block: str | None) -> None:
    """Write a validated spec into a `ScheduledJob` row (the inverse of `spec_from_row`).

    `slack_block` is the name of the block now holding the spec's Slack webhook URL (None when
    the spec gave no URL: then a block named by the spec, or the row's own block, is kept).
    """
    job.name = spec.name
    job.product_id = refs.product_id
    job.brand_id = refs.brand_id
    job.description = spec.description
    job.max_runs = spec.max_runs
    job.template_mode = refs.template_mode
    job.template_count = refs.template_count
    job.template_ids = refs.template_names
    job.exhausted_policy = refs.exhausted_policy
    if slack_block is None and spec.export.slack_webhook_block is None and job.parameters:
        # The spec came from `spec_from_row` (which never carries the URL): keep the job's block.
        slack_block = job.parameters.get("export", {}).get("slack_webhook_block")
    job.parameters = spec.job_parameters(slack_block).model_dump(mode="json")
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


def spec_from_row(job: JobRow) -> JobSpec:
    """The spec of a stored job (the inverse of `fill_row`; see the module docstring).

    Raises:
        InvalidJobSpec: The row holds what no spec allows (e.g. a row written by another tool).
    """
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
    data: dict[str, Any] = {
        "name": job.name,
        "product_id": job.product_id,
        "description": job.description,
        "schedule": schedule,
        "max_runs": job.max_runs,
        "templates": templates,
        "ad": params.get("ad", {}),
        "export": dict(params.get("export", {})),
        "overlap": job.overlap_policy,
        "misfire_grace_seconds": job.misfire_grace_seconds,
        "max_consecutive_failures": job.max_consecutive_failures,
        "tenant_id": job.tenant_id,
    }
    if "template_concurrency" in params:
        data["template_concurrency"] = params["template_concurrency"]
    return JobSpec.parse(data, existing_scheduled_at=job.scheduled_at)


def next_run_for(job: JobRow, now: datetime | None = None) -> datetime | None:
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
