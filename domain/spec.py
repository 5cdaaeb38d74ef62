"""The job spec: what a person says about a scheduled job, validated before anything is written.

One pydantic model tree (`JobSpec`) is the input of the SDK (`AdScheduler.create/apply/update`),
of the CLI (`jobs create` flags or a YAML/JSON file) and of re-applying jobs from files. Every
rule that can be checked without the database lives here; what needs the database (the product
and templates exist and belong to the tenant, the catalog is big enough) is checked by the SDK
before it writes. Errors are `InvalidJobSpec`, one line per field: the field's dotted path and
what is allowed.

Secrets: a Slack webhook URL may be given here (`export.slack_webhook_url`, a `SecretStr`); the
SDK stores it in a Prefect block and only the block's name reaches `scheduled_jobs.parameters`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from domain import cron as cron_rules
from domain import misfire
from domain.errors import InvalidJobSpec
from domain.params import AdParameters, ExportFields, ExportSettings, JobParameters
from domain.vocab import (
    DEFAULT_TEMPLATE_CONCURRENCY,
    MAX_TEMPLATE_CONCURRENCY,
    TEMPLATE_SUFFIXES,
    ExhaustedPolicy,
    OverlapPolicy,
)

MAX_NAME_LENGTH = 120
MAX_DESCRIPTION_LENGTH = 1000
MAX_JITTER_SECONDS = 3600
MAX_TEMPLATES_PER_RUN = 50
SLACK_WEBHOOK_PREFIX = "https://hooks.slack.com/"
#: Validation context key: a one-time datetime equal to this one may lie in the past (re-applying
#: or updating a job whose one-time run is already behind it must not fail on that field).
CONTEXT_EXISTING_AT = "existing_scheduled_at"


# --- schedule -------------------------------------------------------------------------------


class RecurringSchedule(BaseModel):
    """A cron schedule evaluated in an IANA time zone.

    Attributes:
        cron: Five-field cron expression (minute hour day-of-month month day-of-week) or a macro
            such as `@daily`.
        timezone: IANA time zone the cron is evaluated in (DST handled by Prefect's scheduler).
        jitter_seconds: The run waits a random 0..jitter seconds before working (spreads jobs
            that share a cron over time); 0 means none.
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["recurring"] = "recurring"
    cron: str = Field(description="Five-field cron expression, e.g. '0 9 * * 1'.")
    timezone: str = Field(default="UTC", description="IANA time zone, e.g. 'America/New_York'.")
    jitter_seconds: int = Field(default=0, ge=0, le=MAX_JITTER_SECONDS)

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        # Syntax only here; whether it fires (in its time zone) is checked once both are known.
        return cron_rules.normalize_cron(value)

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        return validate_timezone(value)

    @model_validator(mode="after")
    def _prefect_schedules_it(self) -> RecurringSchedule:
        """Valid exactly when Prefect's own scheduler accepts the pair and it fires."""
        try:
            self.cron = cron_rules.validate_schedule(self.cron, self.timezone)
        except cron_rules.ScheduleError as exc:
            raise ValueError(f"{exc.field}: {exc.message}") from None
        return self

    def next_fire_time(self, after: datetime | None = None) -> datetime:
        """When Prefect runs this schedule next, strictly after `after` (default now), UTC."""
        return cron_rules.next_fire_time(self.cron, self.timezone, after=after)


class OneTimeSchedule(BaseModel):
    """A single run at a future moment.

    Attributes:
        at: When to run: an ISO datetime *with* a UTC offset or zone, in the future.
        timezone: Time zone to show the time in (display only; `at` carries its own offset).
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["one_time"] = "one_time"
    at: AwareDatetime = Field(description="Future datetime with a time zone offset.")
    timezone: str = Field(default="UTC", description="IANA time zone used to display `at`.")

    @field_validator("at")
    @classmethod
    def _in_future(cls, value: datetime, info: ValidationInfo) -> datetime:
        value = value.astimezone(UTC)
        existing = (info.context or {}).get(CONTEXT_EXISTING_AT)
        if existing is not None and existing == value:
            return value
        if value <= datetime.now(UTC):
            raise ValueError(
                f"one-time date {value.isoformat()} is in the past; allowed: a future datetime"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        return validate_timezone(value)


Schedule = Annotated[RecurringSchedule | OneTimeSchedule, Field(discriminator="type")]


def validate_timezone(value: str) -> str:
    """Check a time zone name the way Prefect's scheduler does; returns it."""
    try:
        return cron_rules.validate_timezone(value)
    except cron_rules.ScheduleError as exc:
        raise ValueError(exc.message) from None


# --- templates ------------------------------------------------------------------------------


class UnusedTemplates(BaseModel):
    """Pick `count` templates this product has never used.

    Attributes:
        count: Templates per run (1..50, and at most the size of the catalog).
        when_exhausted: When none are left: `recycle` (least recently used), `skip` the run, or
            `fail` it.
    """

    model_config = ConfigDict(extra="forbid")

    mode: Literal["unused"] = "unused"
    count: int = Field(default=3, ge=1, le=MAX_TEMPLATES_PER_RUN)
    when_exhausted: ExhaustedPolicy = "recycle"


class SpecificTemplates(BaseModel):
    """Always use the listed templates (catalog ids or storage names)."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["specific"] = "specific"
    templates: list[str] = Field(min_length=1, max_length=MAX_TEMPLATES_PER_RUN)

    @field_validator("templates")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        cleaned = [v.strip() for v in value]
        if any(not v for v in cleaned):
            raise ValueError("template ids/storage names must not be empty")
        return list(dict.fromkeys(cleaned))


class UploadedTemplates(BaseModel):
    """Templates uploaded with the job: image files, stored in template storage."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["uploaded"] = "uploaded"
    files: list[Path] = Field(min_length=1, max_length=MAX_TEMPLATES_PER_RUN)

    @field_validator("files")
    @classmethod
    def _readable_images(cls, value: list[Path]) -> list[Path]:
        for path in value:
            if path.suffix.lower() not in TEMPLATE_SUFFIXES:
                raise ValueError(
                    f"{path.name}: not a template image; allowed: {', '.join(TEMPLATE_SUFFIXES)}"
                )
            if not path.is_file():
                raise ValueError(f"{path}: no such file")
        return value


Templates = Annotated[
    UnusedTemplates | SpecificTemplates | UploadedTemplates, Field(discriminator="mode")
]


# --- export ---------------------------------------------------------------------------------


class ExportSpec(ExportFields):
    """Where finished ads go: the export settings, plus the Slack webhook URL itself.

    The fields and rules are `ExportFields`' (see `domain.params`); added here:

    Attributes:
        slack_webhook_url: A Slack incoming-webhook URL (`https://hooks.slack.com/...`); stored
            in a Prefect block by the SDK, never in parameters. Either it or
            `slack_webhook_block` names the Slack target.
    """

    SLACK_TARGET_ALLOWED: ClassVar[str] = (
        "slack_webhook_url (https://hooks.slack.com/...) or slack_webhook_block"
    )

    slack_webhook_url: SecretStr | None = None

    @field_validator("slack_webhook_url")
    @classmethod
    def _slack_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        url = value.get_secret_value().strip()
        # Never echo the URL: it is a credential.
        if not url.startswith(SLACK_WEBHOOK_PREFIX) or len(url) <= len(SLACK_WEBHOOK_PREFIX):
            raise ValueError(
                "not a Slack incoming webhook; allowed: a URL starting with "
                f"{SLACK_WEBHOOK_PREFIX} (e.g. https://hooks.slack.com/services/T000/B000/abcd1234)"
            )
        if any(c.isspace() for c in url) or not re.fullmatch(r"[\x21-\x7e]+", url):
            raise ValueError("the Slack webhook URL contains invalid characters")
        return SecretStr(url)

    def has_slack_target(self) -> bool:
        """True when a Slack export knows where to post (a URL or a saved block)."""
        return bool(self.slack_webhook_url or self.slack_webhook_block)

    def to_settings(self, slack_block_name: str | None) -> ExportSettings:
        """The stored export settings, with the Slack webhook replaced by its block name."""
        return ExportSettings(
            destination=self.destination,
            email_recipients=list(self.email_recipients),
            email_block=self.email_block,
            email_mode=self.email_mode,
            slack_webhook_block=(
                (slack_block_name or self.slack_webhook_block)
                if self.wants_slack
                else self.slack_webhook_block
            ),
        )


# --- the job --------------------------------------------------------------------------------


class JobSpec(BaseModel):
    """A scheduled job, as a person describes it.

    Attributes:
        name: Unique per tenant (re-applying a spec with the same name updates that job).
        product_id: The product ads are made for (must belong to the tenant).
        description: Free text shown in the Prefect UI.
        schedule: `recurring` (cron + time zone) or `one_time` (a future datetime).
        max_runs: Stop after this many completed scheduled runs; None = no limit.
        templates: `unused`, `specific` or `uploaded`.
        ad: How each ad run is made (variations, content source, colour and image mode).
        export: Where finished ads go.
        template_concurrency: Templates generated at once within one run (1..32).
        overlap: `skip` (default: a run that would overlap is cancelled) or `queue` (it waits).
        misfire_grace_seconds: A run starting more than this many seconds after its scheduled
            time is skipped as missed; 0 = no limit (late runs always run), else 60..604800
            (`domain.misfire`: a shorter grace would skip on-time runs).
        max_consecutive_failures: The job pauses itself after this many failed runs in a row.
        tenant_id: Optional; when given it must be the SDK's tenant.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    product_id: UUID
    description: str = Field(default="", max_length=MAX_DESCRIPTION_LENGTH)
    schedule: Schedule
    max_runs: int | None = Field(default=None, ge=1)
    templates: Templates = Field(default_factory=UnusedTemplates)
    ad: AdParameters = Field(default_factory=AdParameters)
    export: ExportSpec = Field(default_factory=ExportSpec)
    template_concurrency: int = Field(
        default=DEFAULT_TEMPLATE_CONCURRENCY, ge=1, le=MAX_TEMPLATE_CONCURRENCY
    )
    overlap: OverlapPolicy = "skip"
    misfire_grace_seconds: int = Field(default=3600)
    max_consecutive_failures: int = Field(default=3, ge=1, le=100)
    tenant_id: UUID | None = None

    @field_validator("misfire_grace_seconds")
    @classmethod
    def _valid_grace(cls, value: int) -> int:
        return misfire.validate_grace(value)

    @model_validator(mode="after")
    def _one_time_runs_once(self) -> JobSpec:
        if isinstance(self.schedule, OneTimeSchedule) and (self.max_runs or 1) != 1:
            raise ValueError("max_runs: a one-time job runs once; allowed: empty or 1")
        return self

    @classmethod
    def parse(cls, data: Any, *, existing_scheduled_at: datetime | None = None) -> JobSpec:
        """Validate a dict (from a file, flags or code); raises `InvalidJobSpec`."""
        if isinstance(data, JobSpec):
            data = data.model_dump(mode="python")
        context = {CONTEXT_EXISTING_AT: existing_scheduled_at}
        try:
            return cls.model_validate(data, context=context)
        except ValidationError as exc:
            raise InvalidJobSpec.from_validation_error(exc) from None

    @property
    def is_one_time(self) -> bool:
        """True for a one-time job."""
        return isinstance(self.schedule, OneTimeSchedule)

    def job_parameters(self, slack_block_name: str | None) -> JobParameters:
        """The `scheduled_jobs.parameters` document (no secrets)."""
        return JobParameters(
            ad=self.ad,
            export=self.export.to_settings(slack_block_name),
            template_concurrency=self.template_concurrency,
        )
