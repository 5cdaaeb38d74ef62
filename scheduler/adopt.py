"""`jobs adopt`: the jobs already in an adopted `scheduled_jobs` table become working jobs.

Each row of the tenant that has no deployment yet (a job the old scheduler page created) is read
as a `JobSpec` and applied through the SDK (`AdScheduler.apply`, the one deployment path), which
keeps the row and gives it its Prefect deployment:

- schedule: a recurring cron, evaluated in UTC as the old worker did, or the one-time
  `scheduled_at`;
- status kept (a paused job's deployment is paused, a completed one's schedule is off),
  `max_runs`, template mode / count / ids;
- `parameters` in the old page's key names (`num_variations`, `content_source`, `color_mode`,
  `image_mode`, `export_destination`, `export_email`, `slack_webhook_url`) become the project's
  `AdParameters` / `ExportSettings`; a Slack webhook URL moves into the job's secret
  `SlackIncomingWebhook` block and out of the row.

Afterwards the job's counters are derived from its history (`derive_job_state`), so the old runs
count toward `max_runs` exactly like the project's own. A row that cannot be adopted is reported
with the field (the row's own column or parameter name) and the reason, and left untouched; the
others are adopted. Adopted rows have a deployment, so running it again adopts nothing twice.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from db.adopt import short_db_error
from db.driver import SQLAlchemyError
from db.queries import adopt as q
from db.queries.job_runs import derive_job_state
from db.read_models import JobView, LegacyJobView
from db.session import session_scope
from domain.errors import AdSchedulerError, FieldProblem, InvalidJobSpec
from domain.spec import JobSpec
from domain.vocab import EMAIL_DESTINATIONS, SCHEDULED_JOB_FLOW, SLACK_DESTINATIONS
from flows import deployment_sync as dep

if TYPE_CHECKING:
    from scheduler.sdk import AdScheduler

#: The old scheduler page's parameter keys, and where each one goes in the job spec.
LEGACY_AD_KEYS = {
    "num_variations": "variations",
    "content_source": "content_source",
    "color_mode": "color_mode",
    "image_mode": "image_mode",
    "product_image": "product_image",
    "product_image_path": "product_image",
}
LEGACY_EXPORT_KEYS = ("export_destination", "export_email", "slack_webhook_url")
#: Spec paths reported under the row's own names (longest prefix first).
_SPEC_TO_ROW = (
    ("ad.variations", "parameters.num_variations"),
    ("ad.content_source", "parameters.content_source"),
    ("ad.color_mode", "parameters.color_mode"),
    ("ad.image_mode", "parameters.image_mode"),
    ("ad.product_image", "parameters.product_image"),
    ("ad", "parameters"),
    ("export.email_recipients", "parameters.export_email"),
    ("export.slack_webhook_url", "parameters.slack_webhook_url"),
    ("export", "parameters.export_destination"),
    ("schedule.cron", "cron_expression"),
    ("schedule.at", "scheduled_at"),
    ("schedule", "schedule_type"),
    ("templates.count", "template_count"),
    ("templates.templates", "template_ids"),
    ("templates", "template_mode"),
)
#: The old worker evaluated cron expressions in UTC.
LEGACY_TIMEZONE = "UTC"


@dataclass
class AdoptedJob:
    """What happened to one row.

    Attributes:
        outcome: `adopted` or `failed` (then nothing of the row changed).
        problems: For a failed row: each field (the row's column or parameter name) and why.
        notes: For an adopted row: schedule, status, deployment and anything worth knowing.
    """

    job_id: uuid.UUID
    name: str
    outcome: str
    problems: list[FieldProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class AdoptJobsError(AdSchedulerError):
    """The jobs could not be read at all (database unreachable or not upgraded yet)."""


@dataclass
class JobAdoptionReport:
    """Per-row results of `adopt_jobs`, plus notes about the tenant's old template usage."""

    rows: list[AdoptedJob] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def adopted(self) -> list[AdoptedJob]:
        """Rows that now have a deployment."""
        return [r for r in self.rows if r.outcome == "adopted"]

    @property
    def failed(self) -> list[AdoptedJob]:
        """Rows left untouched, with the reasons."""
        return [r for r in self.rows if r.outcome == "failed"]

    def render(self) -> str:
        """One block per row: ✓ adopted (with notes) or ✗ not adopted (field: reason)."""
        if not self.rows:
            return "\n".join(
                ["no job to adopt: every job of this tenant already has a deployment", *self.notes]
            )
        lines = [f"{len(self.adopted)} job(s) adopted, {len(self.failed)} not adopted", *self.notes]
        for row in self.rows:
            mark = "✓ adopted" if row.outcome == "adopted" else "✗ not adopted (row unchanged)"
            lines.append(f"{mark}: {row.name} ({row.job_id})")
            lines.extend(f"    {note}" for note in row.notes)
            lines.extend(f"    {problem}" for problem in row.problems)
        return "\n".join(lines)


def _row_field(spec_path: str) -> str:
    for prefix, name in _SPEC_TO_ROW:
        if spec_path == prefix or spec_path.startswith(prefix + "."):
            return name
    return spec_path


def _recipients(value: Any) -> list[str] | None:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [v for v in re.split(r"[,;\s]+", value) if v]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    return None


def legacy_spec(
    row: LegacyJobView,
    *,
    email_block: str | None = None,
    slack_webhook_block: str | None = None,
    catalog: set[str] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The job spec of an old row, and notes (e.g. ignored parameter keys).

    Args:
        row: A `scheduled_jobs` row written by the old scheduler page.
        email_block: Resend email block for rows that email their ads (the old worker used one
            global API key; the project keeps it in a block).
        slack_webhook_block: Slack webhook block for rows that post to Slack without their own
            `slack_webhook_url` (the old worker's global webhook).
        catalog: The tenant's template storage names: `template_ids` written as storage paths
            are matched to them (see `catalog_name`).

    Raises:
        InvalidJobSpec: A field cannot be read; each problem names the row's column or key.
    """
    problems: list[FieldProblem] = []
    notes: list[str] = []

    def problem(name: str, message: str) -> None:
        problems.append(FieldProblem(field=name, message=message))

    params = row.parameters if isinstance(row.parameters, dict) else None
    if params is None:
        problem("parameters", "not a JSON object; allowed: the old page's parameter object")
        params = {}
    ad: dict[str, Any] = {}
    for key, target in LEGACY_AD_KEYS.items():
        if key in params and params[key] is not None:
            ad[target] = params[key]
    if ad.get("image_mode") == "manual":  # the old page's name for one chosen product image
        ad["image_mode"] = "specific"

    destination = params.get("export_destination") or "none"
    export: dict[str, Any] = {"destination": destination}
    wants_email = destination in EMAIL_DESTINATIONS
    wants_slack = destination in SLACK_DESTINATIONS
    recipients = _recipients(params.get("export_email"))
    if recipients is None:
        problem("parameters.export_email", "allowed: addresses separated by commas, or a list")
    elif recipients:
        export["email_recipients"] = recipients
    if wants_email:
        if email_block is None:
            problem(
                "parameters.export_destination",
                f"{destination!r} emails the ads, which needs a Resend email block; save one "
                "and run `ad-scheduler jobs adopt --email-block NAME`",
            )
        else:
            export["email_block"] = email_block
    url = params.get("slack_webhook_url")
    if url:
        # Moves into the job's secret block (the SDK stores it); never into the new row.
        export["slack_webhook_url"] = url
    elif wants_slack:
        if slack_webhook_block is None:
            problem(
                "parameters.slack_webhook_url",
                "empty, but the job posts to Slack; save a Slack webhook block and run "
                "`ad-scheduler jobs adopt --slack-webhook-block NAME`",
            )
        else:
            export["slack_webhook_block"] = slack_webhook_block
    known = set(LEGACY_AD_KEYS) | set(LEGACY_EXPORT_KEYS)
    ignored = sorted(k for k in params if k not in known)
    if ignored:
        notes.append(f"parameters not used by ad-scheduler (ignored): {', '.join(ignored)}")

    schedule: dict[str, Any]
    if row.schedule_type == "recurring":
        schedule = {"type": "recurring", "cron": row.cron_expression, "timezone": LEGACY_TIMEZONE}
        if not row.cron_expression:
            problem("cron_expression", "empty; a recurring job needs a cron expression")
    else:
        schedule = {"type": "one_time", "at": row.scheduled_at, "timezone": LEGACY_TIMEZONE}
        if row.scheduled_at is None:
            problem("scheduled_at", "empty; a one-time job needs the time to run at")
    templates: dict[str, Any]
    if row.template_mode == "unused":
        templates = {"mode": "unused", "count": row.template_count}
        if row.template_count is None:
            problem("template_count", "empty; allowed: how many unused templates per run (1..50)")
    else:
        names = list(row.template_ids or [])
        if catalog is not None:
            names = [catalog_name(n, catalog) or n for n in names]
        templates = {"mode": "specific", "templates": names}
        if not row.template_ids:
            problem("template_ids", f"empty; {row.template_mode!r} mode needs template names")
    if problems:
        raise InvalidJobSpec(problems)
    spec = {
        "name": row.name,
        "product_id": row.product_id,
        "schedule": schedule,
        "max_runs": row.max_runs,
        "templates": templates,
        "ad": ad,
        "export": export,
    }
    try:
        JobSpec.parse(spec, existing_scheduled_at=row.scheduled_at)
    except InvalidJobSpec as exc:
        raise InvalidJobSpec(
            [FieldProblem(field=_row_field(p.field), message=p.message) for p in exc.problems]
        ) from None
    return spec, notes


async def adopt_jobs(
    ads: AdScheduler,
    *,
    email_block: str | None = None,
    slack_webhook_block: str | None = None,
) -> JobAdoptionReport:
    """Give every row of the SDK's tenant without a deployment its deployment (see module doc).

    A failed row changes nothing (each row is one atomic SDK write); the others go on.
    """
    report = JobAdoptionReport()
    try:
        rows, names, history = await _rows_to_adopt(ads)
    except (SQLAlchemyError, OSError) as exc:
        raise AdoptJobsError(
            f"cannot read the jobs to adopt: {short_db_error(exc)}. Check DATABASE_URL, and run "
            "`ad-scheduler db upgrade` first (it adopts an existing database)"
        ) from exc
    catalog = await _match_catalog_names(ads, report)
    for row in rows:
        try:
            outcome = await _adopt_one(
                ads,
                row,
                names.get(row.name, 1),
                history[row.id],
                email_block=email_block,
                slack_webhook_block=slack_webhook_block,
                catalog=catalog,
            )
        except SQLAlchemyError as exc:
            outcome = AdoptedJob(
                job_id=row.id,
                name=row.name,
                outcome="failed",
                problems=[FieldProblem(field="database", message=short_db_error(exc))],
            )
        report.rows.append(outcome)
    return report


async def _rows_to_adopt(
    ads: AdScheduler,
) -> tuple[list[LegacyJobView], dict[str, int], dict[uuid.UUID, int]]:
    async with session_scope(ads.database_url) as session:
        rows = await q.jobs_without_deployment(session, ads.tenant_id)
        names = await q.live_name_counts(session, ads.tenant_id)
        history = {row.id: await q.completed_scheduled_runs(session, row.id) for row in rows}
    return rows, names, history


def catalog_name(name: str, catalog: set[str]) -> str | None:
    """The catalog's storage name for a template name the old scheduler wrote, or None.

    The old worker may have stored a path ("templates/summer.png", "bucket/templates/…") where
    the catalog holds names relative to the templates folder ("summer.png"): the longest
    trailing part of the path that the catalog knows is the match.
    """
    parts = name.strip().split("/")
    for start in range(len(parts)):
        candidate = "/".join(parts[start:])
        if candidate in catalog:
            return candidate
    return None


async def _match_catalog_names(ads: AdScheduler, report: JobAdoptionReport) -> set[str]:
    """Key the tenant's old usage rows by the catalog's storage names, so that `unused` mode
    (which compares usage with the catalog by storage name) does not pick them again."""
    async with session_scope(ads.database_url) as session:
        catalog = await q.template_storage_names(session, ads.tenant_id)
        done = await q.rename_usage(
            session, ads.tenant_id, catalog, lambda name: catalog_name(name, catalog)
        )
    if done.renamed:
        report.notes.append(
            f"{done.renamed} template usage row(s) renamed to the catalog's storage names"
        )
    if done.unknown:
        report.notes.append(
            f"{done.unknown} template usage row(s) name templates that are not in the catalog "
            "(kept as they are; run `ad-scheduler templates sync` if those templates are in "
            "storage)"
        )
    return catalog


async def _adopt_one(
    ads: AdScheduler,
    row: LegacyJobView,
    same_name: int,
    completed_runs: int,
    *,
    email_block: str | None,
    slack_webhook_block: str | None,
    catalog: set[str],
) -> AdoptedJob:
    result = AdoptedJob(job_id=row.id, name=row.name, outcome="failed")
    if same_name > 1:
        result.problems.append(
            FieldProblem(
                field="name",
                message=f"{same_name} jobs of this tenant are named {row.name!r}; job names are "
                "unique in ad-scheduler: rename all but one, then run `jobs adopt` again",
            )
        )
        return result
    if (row.runs_completed or 0) > completed_runs:
        # The project counts runs from the history; fewer recorded runs would mean extra runs.
        result.problems.append(
            FieldProblem(
                field="runs_completed",
                message=f"{row.runs_completed} runs completed, but scheduled_job_runs holds "
                f"{completed_runs} completed run(s) of this job and ad-scheduler counts that "
                "history toward max_runs; lower max_runs by the difference (and runs_completed "
                "to match), then run `jobs adopt` again",
            )
        )
        return result
    try:
        spec, notes = legacy_spec(
            row, email_block=email_block, slack_webhook_block=slack_webhook_block, catalog=catalog
        )
        job = await ads.apply(spec)
    except InvalidJobSpec as exc:
        result.problems = [
            FieldProblem(field=_row_field(p.field), message=p.message) for p in exc.problems
        ]
        return result
    except AdSchedulerError as exc:
        result.problems.append(FieldProblem(field="deployment", message=str(exc)))
        return result
    result.outcome = "adopted"
    name = job.deployment_name or dep.deployment_name(job.id, job.name)
    result.notes = [
        _schedule_note(job),
        f"deployment {SCHEDULED_JOB_FLOW}/{name} ({job.prefect_deployment_id})",
        *notes,
    ]
    try:
        result.notes.insert(1, await _follow_history(ads, job, row, name))
    except (AdSchedulerError, SQLAlchemyError) as exc:
        # The job is adopted (row and deployment); its counters follow after its next run.
        result.notes.insert(1, f"counters not derived yet ({short_db_error(exc)})")
    if (row.parameters or {}).get("slack_webhook_url"):
        block = (job.parameters or {}).get("export", {}).get("slack_webhook_block")
        result.notes.append(f"Slack webhook moved into the secret block {block!r}")
    return result


async def _follow_history(
    ads: AdScheduler, job: JobView, row: LegacyJobView, deployment_name: str
) -> str:
    """Store the deployment's name and derive the counters from the run history (old runs
    count like the project's own); returns the status note."""
    async with session_scope(ads.database_url) as session:
        await q.lock_and_name_deployment(session, job.id, deployment_name)
        state = await derive_job_state(session, job.id)
    if state.status_changed_to is not None:
        # The history says the job is done (max_runs reached) or must pause: the deployment
        # follows the row, as after any run.
        await ads.resync(job.id)
    changed = (
        f" (was {row.status}: {state.status_changed_to} by its history)"
        if state.status_changed_to
        else ""
    )
    return (
        f"status {state.status}{changed}; runs {state.runs_completed}/{job.max_runs or '∞'} "
        "(from its run history)"
    )


def _schedule_note(job: JobView) -> str:
    if job.schedule_type == "recurring":
        return f"schedule: cron {job.cron_expression!r} in {job.timezone}"
    at = job.scheduled_at.isoformat() if job.scheduled_at else "?"
    return f"schedule: once at {at}"
