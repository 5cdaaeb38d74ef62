"""Manage jobs from the Prefect UI: deployments whose Run form *is* the job spec.

Five flows, each deployed from `prefect.yaml` (`save-job`, `pause-job`, `resume-job`,
`delete-job`, `run-job-now`). A marketer opens one in the Prefect UI, presses Run → Custom run,
and fills in a form that Prefect renders from the flow's parameter model: every choice is a
dropdown (the `Literal`s and the time-zone list below), every field has its description and
default. The run does what `ad-scheduler jobs …` does, **through the SDK** (`AdScheduler`), so
every rule holds: a bad field fails the run with the SDK's own message naming the field
(`schedule.cron: '0 0 31 2 *' never fires …`) and nothing is written.

Why this lives in `scheduler/` and not `flows/`: the forms are a *client* of the SDK — the same
operation as the CLI, with a form instead of flags — and the SDK's rules (catalog and block
checks, atomic row + deployment writes with undo, Slack secrets kept in blocks) live in
`scheduler/sdk.py`. `flows/` may not import `scheduler/` (layers depend downward only), and
copying those rules below it would give two sets of rules that drift. `scheduler` is the top
layer, so a flow defined here may use everything; a worker imports it from its entrypoint like
any other flow.

Secrets: the form has no field for a Slack webhook URL (a flow run's parameters are shown in the
UI); a job names saved blocks only (`export.slack_webhook_block`, `export.email_block`).
The tenant is the one the CLI acts for (`AD_SCHEDULER_TENANT_ID`).
"""

from __future__ import annotations

import uuid
import zoneinfo
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger
from prefect.states import Completed, Failed, State
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from config import get_settings
from db.read_models import JobView
from domain import cron as cron_rules
from domain.approval import ApprovalSettings
from domain.errors import AdSchedulerError, InvalidJobSpec
from domain.params import MAX_RECIPIENTS, MAX_VARIATIONS, AdParameters, ExportSettings
from domain.spec import (
    MAX_DESCRIPTION_LENGTH,
    MAX_JITTER_SECONDS,
    MAX_NAME_LENGTH,
    MAX_TEMPLATES_PER_RUN,
    JobSpec,
    RecurringSchedule,
    UnusedTemplates,
)
from domain.vocab import (
    MAX_TEMPLATE_CONCURRENCY,
    ColorMode,
    ContentSource,
    Destination,
    EmailMode,
    ExhaustedPolicy,
    ImageMode,
    OverlapPolicy,
)
from scheduler.sdk import AdScheduler


def _defaults(model: type[BaseModel]) -> dict[str, Any]:
    """A domain model's field defaults: the forms offer them, never a restated copy."""
    return {name: field.default for name, field in model.model_fields.items()}


_SPEC_DEFAULTS = _defaults(JobSpec)
_RECURRING_DEFAULTS = _defaults(RecurringSchedule)
_UNUSED_DEFAULTS = _defaults(UnusedTemplates)
_AD_DEFAULTS = _defaults(AdParameters)
_EXPORT_DEFAULTS = _defaults(ExportSettings)

#: Zone names that are aliases of the machine's files, not places (Prefect accepts some of them;
#: `domain.cron` refuses the machine-dependent ones).
_NOT_PLACES = ("posix/", "right/", "SystemV/")


@lru_cache(maxsize=1)
def time_zone_names() -> list[str]:
    """Every time zone a job may use (what Prefect schedules with), UTC first, for the dropdown."""
    names = []
    for name in sorted(zoneinfo.available_timezones()):
        if name.startswith(_NOT_PLACES) or name == "UTC":
            continue
        try:
            cron_rules.validate_timezone(name)
        except cron_rules.ScheduleError:
            continue
        names.append(name)
    return ["UTC", *names]


def _time_zone_schema() -> dict[str, Any]:
    return {"type": "string", "enum": time_zone_names()}


#: A time zone, shown as a dropdown of every zone Prefect schedules with.
TimeZoneName = Annotated[str, WithJsonSchema(_time_zone_schema())]
#: A job, as a person names it in a form.
JobReference = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_NAME_LENGTH,
        description="The job's name (as `ad-scheduler jobs list` shows it) or its id.",
    ),
]


class ScheduleForm(BaseModel):
    """When the job runs."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["recurring", "one_time"] = Field(
        default="recurring",
        title="Kind",
        description="`recurring`: on the cron below. `one_time`: once, at `at`.",
    )
    cron: str = Field(
        default="0 9 * * 1",
        description="Recurring jobs: five-field cron 'minute hour day-of-month month "
        "day-of-week' (e.g. '0 9 * * 1' = Mondays 09:00) or @daily, @weekly, …",
    )
    timezone: TimeZoneName = Field(
        default=_RECURRING_DEFAULTS["timezone"],
        title="Time zone",
        description="The cron is evaluated in this zone (daylight saving included); a "
        "one-time `at` without an offset is read in it too.",
    )
    jitter_seconds: int = Field(
        default=_RECURRING_DEFAULTS["jitter_seconds"],
        ge=0,
        le=MAX_JITTER_SECONDS,
        description="Recurring jobs: wait a random 0..N seconds before working (0 = none).",
    )
    at: datetime | None = Field(
        default=None,
        description="One-time jobs: when to run (in the future).",
    )

    def to_spec(self) -> dict[str, Any]:
        """The `schedule` of a `JobSpec`."""
        if self.type == "recurring":
            return {
                "type": "recurring",
                "cron": self.cron,
                "timezone": self.timezone,
                "jitter_seconds": self.jitter_seconds,
            }
        at = self.at
        if at is not None and at.tzinfo is None:
            try:
                at = at.replace(tzinfo=zoneinfo.ZoneInfo(self.timezone))
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                at = at.replace(tzinfo=UTC)
        return {"type": "one_time", "at": at, "timezone": self.timezone}


class TemplatesForm(BaseModel):
    """Which templates each run uses."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["unused", "specific"] = Field(
        default="unused",
        description="`unused`: templates this product has never used. `specific`: the "
        "templates listed below, every run.",
    )
    count: int = Field(
        default=_UNUSED_DEFAULTS["count"],
        ge=1,
        le=MAX_TEMPLATES_PER_RUN,
        description="`unused` mode: templates per run (at most the size of the catalog).",
    )
    when_exhausted: ExhaustedPolicy = Field(
        default=_UNUSED_DEFAULTS["when_exhausted"],
        title="When none are left",
        description="`unused` mode, when the product has used every template: `recycle` the "
        "least recently used, `skip` the run, or `fail` it.",
    )
    templates: list[str] = Field(
        default_factory=list,
        max_length=MAX_TEMPLATES_PER_RUN,
        description="`specific` mode: template ids or storage names "
        "(`ad-scheduler templates list`).",
    )

    def to_spec(self) -> dict[str, Any]:
        """The `templates` of a `JobSpec`."""
        if self.mode == "specific":
            return {"mode": "specific", "templates": list(self.templates)}
        return {"mode": "unused", "count": self.count, "when_exhausted": self.when_exhausted}


class AdForm(BaseModel):
    """How each ad is made."""

    model_config = ConfigDict(extra="forbid")

    variations: int = Field(
        default=_AD_DEFAULTS["variations"],
        ge=1,
        le=MAX_VARIATIONS,
        description="Ads made from each template.",
    )
    content_source: ContentSource = Field(
        default=_AD_DEFAULTS["content_source"],
        title="Headlines from",
        description="`hooks`: the product's hook list. `benefits`: its key benefits. "
        "`recreate_template`: the template's own copy, restyled for the product.",
    )
    color_mode: ColorMode = Field(
        default=_AD_DEFAULTS["color_mode"],
        title="Colours",
        description="`original`: the template's palette. `brand`: the brand colours. "
        "`complementary`: the complements of the brand colours.",
    )
    image_mode: ImageMode = Field(
        default=_AD_DEFAULTS["image_mode"],
        title="Product image",
        description="`auto`: a product image per variation. `specific`: always the image below.",
    )
    product_image: str = Field(
        default="",
        description="`specific` image mode: the storage path of the product image.",
    )
    generator_block: str = Field(
        default="",
        description="Name of a saved generator block (Gemini, HTTP ad service); empty: the "
        "offline renderer.",
    )


class ExportForm(BaseModel):
    """Where finished ads go (saved blocks only: no secret is ever typed into a form)."""

    model_config = ConfigDict(extra="forbid")

    destination: Destination = Field(
        default=_EXPORT_DEFAULTS["destination"],
        description="Send each run's ads by email, to Slack, both, or nowhere.",
    )
    email_recipients: list[str] = Field(
        default_factory=list,
        max_length=MAX_RECIPIENTS,
        description=f"Email: up to {MAX_RECIPIENTS} addresses.",
    )
    email_block: str = Field(
        default="", description="Email: the name of a saved Resend email block."
    )
    email_mode: EmailMode = Field(
        default=_EXPORT_DEFAULTS["email_mode"],
        description="Email: one email per template (`per_ad_run`) or one per run (`digest`).",
    )
    slack_webhook_block: str = Field(
        default="",
        description="Slack: the name of a saved Slack webhook block (create it under Blocks; "
        "the webhook URL is a secret and never goes into a form).",
    )


class JobForm(BaseModel):
    """A scheduled job: the form of `save-job` (the same fields as `ad-scheduler jobs create`)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1,
        max_length=MAX_NAME_LENGTH,
        description="The job's name. Saving a name that exists updates that job.",
    )
    product: str = Field(
        min_length=1, description="The product's name (or id) the ads are made for."
    )
    description: str = Field(
        default="", max_length=MAX_DESCRIPTION_LENGTH, description="Shown with the job."
    )
    schedule: ScheduleForm = Field(default_factory=ScheduleForm)
    max_runs: int = Field(
        default=0, ge=0, description="Stop after this many completed runs; 0: no limit."
    )
    templates: TemplatesForm = Field(default_factory=TemplatesForm)
    ad: AdForm = Field(default_factory=AdForm)
    export: ExportForm = Field(default_factory=ExportForm)
    template_concurrency: int = Field(
        default=_SPEC_DEFAULTS["template_concurrency"],
        ge=1,
        le=MAX_TEMPLATE_CONCURRENCY,
        description="Templates generated at once within one run.",
    )
    overlap: OverlapPolicy = Field(
        default=_SPEC_DEFAULTS["overlap"],
        description="A run due while the previous one still runs: `skip` it, or `queue` it.",
    )
    misfire_grace_seconds: int = Field(
        default=_SPEC_DEFAULTS["misfire_grace_seconds"],
        description="A run starting later than this after its time is skipped as missed: 0 = "
        "no limit, else 60..604800.",
    )
    max_consecutive_failures: int = Field(
        default=_SPEC_DEFAULTS["max_consecutive_failures"],
        ge=1,
        le=100,
        description="Pause the job after this many failed runs in a row.",
    )
    approval: ApprovalSettings = Field(
        default_factory=ApprovalSettings,
        description="Hold the ads for a person's approval before they are exported.",
    )

    def to_spec(self, product_id: uuid.UUID) -> dict[str, Any]:
        """The `JobSpec` input this form describes (validated by `JobSpec.parse`)."""
        return {
            "name": self.name,
            "product_id": product_id,
            "description": self.description,
            "schedule": self.schedule.to_spec(),
            "max_runs": self.max_runs or None,
            "templates": self.templates.to_spec(),
            "ad": _blanks_to_none(self.ad.model_dump()),
            "export": _blanks_to_none(self.export.model_dump()),
            "template_concurrency": self.template_concurrency,
            "overlap": self.overlap,
            "misfire_grace_seconds": self.misfire_grace_seconds,
            "max_consecutive_failures": self.max_consecutive_failures,
            "approval": self.approval.model_dump(),
        }


def _blanks_to_none(values: dict[str, Any]) -> dict[str, Any]:
    # A form shows "not set" as an empty text box; the spec says None.
    return {k: (None if isinstance(v, str) and not v.strip() else v) for k, v in values.items()}


def form_tenant() -> uuid.UUID:
    """The tenant the forms act for (`AD_SCHEDULER_TENANT_ID`, as the CLI)."""
    return uuid.UUID(get_settings().tenant_id)


def _refused(exc: AdSchedulerError) -> State:
    """The run's final state for a refused request: Failed, with the SDK's message."""
    get_run_logger().error("%s", exc)
    return Failed(message=str(exc))


def _done(message: str, data: Any = None) -> State:
    """The run's final state for a request carried out: Completed with `message` (logged)."""
    get_run_logger().info("%s", message)
    return Completed(message=message[:1000], data=data)


async def _with_sdk(act: Callable[[AdScheduler], Awaitable[State]]) -> State:
    """`act` with the SDK for the forms' tenant; a refusal fails the run with the SDK's message."""
    try:
        async with AdScheduler(form_tenant()) as ads:
            return await act(ads)
    except AdSchedulerError as exc:
        return _refused(exc)


def _describe(job: JobView) -> str:
    note = f" — {job.pause_note}" if job.pause_note else ""
    when = job.next_run_at.isoformat() if job.next_run_at else "none"
    return f"job {job.name!r} ({job.id}) is {job.status}{note}; next run: {when}"


@flow(name="save-job", log_prints=False)
async def save_job(job: JobForm) -> State:
    """Create a scheduled job, or update the job of the same name (the form is the whole job).

    Fails, naming the field and what is allowed, on any input the SDK refuses; then nothing is
    written. A paused job stays paused, a UI change to its deployment is kept.

    Args:
        job: The job: name, product, schedule, templates, ad and export settings.
    """

    async def save(ads: AdScheduler) -> State:
        product_id = await ads.catalog.resolve_product_id(job.product, field="product")
        return _done(f"saved {_describe(await ads.apply(JobSpec.parse(job.to_spec(product_id))))}")

    return await _with_sdk(save)


@flow(name="pause-job", log_prints=False)
async def pause_job(job: JobReference, note: str = "") -> State:
    """Pause a job: no scheduled runs until it is resumed (a manual run still works).

    Args:
        job: The job's name (as `ad-scheduler jobs list` shows it) or its id.
        note: Why (shown with the job's status); empty: "Paused from the Prefect UI."
    """

    async def pause(ads: AdScheduler) -> State:
        paused = await ads.pause(job, note=note.strip() or "Paused from the Prefect UI.")
        return _done(f"paused {_describe(paused)}")

    return await _with_sdk(pause)


@flow(name="resume-job", log_prints=False)
async def resume_job(job: JobReference) -> State:
    """Resume a paused job: its schedule runs again (a completed job cannot be resumed).

    Args:
        job: The job's name (as `ad-scheduler jobs list` shows it) or its id.
    """

    async def resume(ads: AdScheduler) -> State:
        return _done(f"resumed {_describe(await ads.resume(job))}")

    return await _with_sdk(resume)


@flow(name="delete-job", log_prints=False)
async def delete_job(
    job: JobReference,
    confirm: Annotated[
        bool,
        Field(description="Tick to delete: the deployment and its scheduled runs go."),
    ] = False,
) -> State:
    """Delete a job: its deployment and scheduled runs are removed, its run history stays.

    Args:
        job: The job's name (as `ad-scheduler jobs list` shows it) or its id.
        confirm: Tick to delete: the deployment and its scheduled runs go.
    """
    if confirm is not True:
        return _refused(
            InvalidJobSpec.one("confirm", "not ticked; allowed: tick it to delete the job")
        )

    async def delete(ads: AdScheduler) -> State:
        deleted = await ads.delete(job)
        return _done(f"deleted job {deleted.name!r} ({deleted.id}); its run history is kept")

    return await _with_sdk(delete)


@flow(name="run-job-now", log_prints=False)
async def run_job_now(job: JobReference) -> State:
    """Start a manual run of a job now (recorded in its history; not counted toward max_runs).

    Args:
        job: The job's name (as `ad-scheduler jobs list` shows it) or its id.
    """

    async def run_now(ads: AdScheduler) -> State:
        target = await ads.get(job)
        flow_run_id = await ads.run_now(target.id)
        return _done(
            f"started a run of job {target.name!r}: flow run {flow_run_id}", data=str(flow_run_id)
        )

    return await _with_sdk(run_now)


FORM_FLOWS = (save_job, pause_job, resume_job, delete_job, run_job_now)

__all__ = [
    "FORM_FLOWS",
    "AdForm",
    "ExportForm",
    "JobForm",
    "ScheduleForm",
    "TemplatesForm",
    "delete_job",
    "pause_job",
    "resume_job",
    "run_job_now",
    "save_job",
    "time_zone_names",
]
