"""Every vocabulary of the project, defined once: the spec's choices, the rows' CHECK
constraints (`db/models.py` generates them from these tuples), the CLI's choices and the flows.

Each vocabulary is a `Literal` type (what pydantic validates and mypy checks) plus the tuple of
its values in a fixed order (`get_args` of the type). The order matters: the CHECK constraints'
SQL text is built from it, and it must stay byte-identical to the migrations' so an adopted or
migrated database compares equal to the models.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

# --- scheduled jobs (`scheduled_jobs`) ------------------------------------------------------

JobStatus = Literal["active", "paused", "completed"]
JOB_STATUSES: Final[tuple[JobStatus, ...]] = get_args(JobStatus)

ScheduleType = Literal["one_time", "recurring"]
SCHEDULE_TYPES: Final[tuple[ScheduleType, ...]] = get_args(ScheduleType)

#: `unused`: templates the product never used; `specific`: the listed ones; `uploaded`: files
#: uploaded with the job.
TemplateMode = Literal["unused", "specific", "uploaded"]
TEMPLATE_MODES: Final[tuple[TemplateMode, ...]] = get_args(TemplateMode)

#: What `unused` mode does when the product has used every template.
ExhaustedPolicy = Literal["recycle", "skip", "fail"]
EXHAUSTED_POLICIES: Final[tuple[ExhaustedPolicy, ...]] = get_args(ExhaustedPolicy)

#: `skip`: a run that would overlap the job's running one is cancelled; `queue`: it waits.
OverlapPolicy = Literal["skip", "queue"]
OVERLAP_POLICIES: Final[tuple[OverlapPolicy, ...]] = get_args(OverlapPolicy)

# --- job runs (`scheduled_job_runs`) --------------------------------------------------------

#: The seed's statuses first; `skipped` and `cancelled` are added for runs the system
#: deliberately did not execute (misfire, duplicate slot, overlap, nothing to do).
#: `awaiting_approval` (revision 0005): the run made its ads and waits, suspended, for a
#: person's decision (flows/approval.py).
RunStatus = Literal[
    "pending", "running", "completed", "failed", "skipped", "cancelled", "awaiting_approval"
]
RUN_STATUSES: Final[tuple[RunStatus, ...]] = get_args(RunStatus)
SEED_RUN_STATUSES: Final[tuple[RunStatus, ...]] = ("pending", "running", "completed", "failed")
TERMINAL_RUN_STATUSES: Final[tuple[RunStatus, ...]] = (
    "completed",
    "failed",
    "skipped",
    "cancelled",
)

#: `schedule`: fired by the job's schedule (counts toward `max_runs`); `manual`: a person's run.
RunTrigger = Literal["schedule", "manual"]
RUN_TRIGGERS: Final[tuple[RunTrigger, ...]] = get_args(RunTrigger)

#: Why a run was skipped (`scheduled_job_runs.skip_reason`).
SkipReason = Literal["misfire", "duplicate_slot", "overlap", "no_templates"]
SKIP_REASONS: Final[tuple[SkipReason, ...]] = get_args(SkipReason)

# --- ad runs and exports --------------------------------------------------------------------

AdRunStatus = Literal["pending", "running", "completed", "failed"]
AD_RUN_STATUSES: Final[tuple[AdRunStatus, ...]] = get_args(AdRunStatus)
UNFINISHED_AD_RUN_STATUSES: Final[tuple[AdRunStatus, ...]] = ("pending", "running")

Channel = Literal["email", "slack"]
EXPORT_CHANNELS: Final[tuple[Channel, ...]] = get_args(Channel)

#: What a send attempt leaves a delivery at. `unconfirmed`: the provider may have accepted it but
#: the outcome was never recorded (revision 0004); shown as "sent, not recorded — check" and
#: never re-sent automatically.
DeliveryResult = Literal["sent", "failed", "unconfirmed"]
#: A delivery row's status (`export_deliveries.status`): `pending` until an attempt settles it.
DeliveryStatus = Literal["pending", DeliveryResult]
DELIVERY_STATUSES: Final[tuple[DeliveryStatus, ...]] = get_args(DeliveryStatus)
#: Delivery statuses meaning the send went out, or may have (never re-sent without `--force`).
DELIVERY_OUT_STATUSES: Final[tuple[DeliveryStatus, ...]] = ("sent", "unconfirmed")
#: What one export of one run to one channel came to (`flows.exports.DeliveryOutcome.status`):
#: its delivery's result, or `already_sent` (an earlier send holds; nothing went out) or
#: `skipped` (nothing to send). Never stored; the delivery row keeps `DeliveryStatus`.
ExportOutcome = Literal[DeliveryResult, "already_sent", "skipped"]
EXPORT_OUTCOMES: Final[tuple[ExportOutcome, ...]] = get_args(ExportOutcome)

#: `permanent`: reconfigure, do not retry; `retryable`: a later attempt may succeed.
ErrorKind = Literal["permanent", "retryable"]
ERROR_KINDS: Final[tuple[ErrorKind, ...]] = get_args(ErrorKind)

#: Where finished ads go.
Destination = Literal["none", "email", "slack", "both"]
DESTINATIONS: Final[tuple[Destination, ...]] = get_args(Destination)
EMAIL_DESTINATIONS: Final[tuple[Destination, ...]] = ("email", "both")
SLACK_DESTINATIONS: Final[tuple[Destination, ...]] = ("slack", "both")

#: `per_ad_run`: one email per template (as the seed did); `digest`: one per job run.
EmailMode = Literal["per_ad_run", "digest"]
EMAIL_MODES: Final[tuple[EmailMode, ...]] = get_args(EmailMode)

# --- ad parameters --------------------------------------------------------------------------

#: Where headlines come from: the product's hooks, its benefits, or the template's own copy.
ContentSource = Literal["hooks", "benefits", "recreate_template"]
CONTENT_SOURCES: Final[tuple[ContentSource, ...]] = get_args(ContentSource)
#: The template's palette, the brand's colours, or their complements.
ColorMode = Literal["original", "brand", "complementary"]
COLOR_MODES: Final[tuple[ColorMode, ...]] = get_args(ColorMode)
#: `auto` picks a product image per variation; `specific` always uses the one named.
ImageMode = Literal["auto", "specific"]
IMAGE_MODES: Final[tuple[ImageMode, ...]] = get_args(ImageMode)

# --- templates and storage ------------------------------------------------------------------

#: `ad_templates.source`: the shared catalog, or uploaded with one job.
TemplateSource = Literal["library", "uploaded"]
TEMPLATE_SOURCES: Final[tuple[TemplateSource, ...]] = get_args(TemplateSource)

#: File suffixes (lower case) a template image may have.
TEMPLATE_SUFFIXES: Final = (".png", ".jpg", ".jpeg", ".webp")
#: Storage folders: the template library, files uploaded with a job (under the templates
#: folder, catalogued by the SDK), generated ads.
TEMPLATES_FOLDER: Final = "templates"
UPLOADS_FOLDER: Final = "uploads"
ADS_FOLDER: Final = "ads"

# --- the flow and its limits ----------------------------------------------------------------

#: The Prefect flow every scheduled job's deployment runs.
SCHEDULED_JOB_FLOW: Final = "run-scheduled-job"
#: Templates generated at once within one run, unless the job says otherwise.
DEFAULT_TEMPLATE_CONCURRENCY: Final = 4
MAX_TEMPLATE_CONCURRENCY: Final = 32
