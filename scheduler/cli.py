"""The `ad-scheduler` command line (typer): jobs, runs, templates and the database.

No traceback reaches a person: every error a command meets is printed as one short message
(what failed, which field or setting, what to do) and the exit status says whose it is —
**2** for bad input (an invalid spec, conflicting options, an unknown job, a name already taken,
an operation the job's state does not allow), **1** for a failure the command could not avoid
(Prefect or the database unreachable, an unexpected error). `ad-scheduler --debug …` (or
`AD_SCHEDULER_DEBUG=1`) also prints the traceback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import json
import socket
import sys
import traceback
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar
from zoneinfo import ZoneInfo

import httpx
import sqlalchemy as sa
import typer
import yaml
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from typer._click import ClickException  # typer 0.29 vendors click: its usage errors
from typer.core import TyperGroup

from config import get_settings
from db.errors import ConflictError, NotFoundError
from db.migrate import aupgrade
from db.models import ScheduledJob, ScheduledJobRun
from db.session import dispose_engines
from domain.errors import AdSchedulerError, InvalidJobSpec
from domain.vocab import EXHAUSTED_POLICIES, JOB_STATUSES, SCHEDULED_JOB_FLOW
from scheduler.adopt import JobAdoptionReport
from scheduler.sdk import (
    START_SERVER_HINT,
    AdScheduler,
    JobStateError,
    database_problem,
    probe_prefect_api,
    redact_url,
)

T = TypeVar("T")

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


class UsageProblem(AdSchedulerError):
    """What the person asked for is contradictory or malformed (exit status 2)."""


#: Errors that mean "the input is wrong": fixing the command line or the file fixes them.
BAD_INPUT_ERRORS: tuple[type[BaseException], ...] = (
    UsageProblem,
    InvalidJobSpec,
    NotFoundError,
    ConflictError,
    JobStateError,
    yaml.YAMLError,
    json.JSONDecodeError,
    FileNotFoundError,
    IsADirectoryError,
)


def describe_error(exc: BaseException) -> tuple[int, str]:
    """The exit status and the one message a person sees for an error (never a secret)."""
    if isinstance(exc, BAD_INPUT_ERRORS):
        if isinstance(exc, OSError):
            return EXIT_BAD_INPUT, f"{exc.strerror or type(exc).__name__}: {exc.filename}"
        return EXIT_BAD_INPUT, str(exc)
    if isinstance(exc, AdSchedulerError):
        return EXIT_FAILURE, str(exc)
    if isinstance(exc, sa.exc.SQLAlchemyError | ConnectionError | TimeoutError | socket.gaierror):
        return EXIT_FAILURE, database_problem(exc)
    if isinstance(exc, httpx.HTTPError):
        return EXIT_FAILURE, (
            f"Prefect API error ({type(exc).__name__}); check PREFECT_API_URL and that the "
            f"server is running ({START_SERVER_HINT})"
        )
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return EXIT_FAILURE, redact_url(
        f"unexpected {type(exc).__name__}: {first} (run with --debug for the traceback)"
    )


#: Commands that use the Prefect API outside the SDK.
PREFECT_COMMANDS = frozenset({"export"})


class FriendlyGroup(TyperGroup):
    """The root command: turns any error of any subcommand into a message and exit status."""

    def invoke(self, ctx: Any) -> Any:
        try:
            # typer keeps the subcommand's name in `_protected_args` until it dispatches.
            args = [*(getattr(ctx, "_protected_args", None) or []), *(ctx.args or [])]
            if args and args[0] in PREFECT_COMMANDS and "--help" not in args:
                # It talks to Prefect directly (not through the SDK, which probes by itself):
                # say within seconds that the API is unreachable, not after the client's retries.
                asyncio.run(probe_prefect_api())
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, ClickException):
            raise  # typer's own: usage errors (exit 2), --help, confirmations
        except KeyboardInterrupt:
            err_console.print("interrupted", highlight=False)
            raise typer.Exit(130) from None
        except Exception as exc:
            code, message = describe_error(exc)
            if ctx.params.get("debug"):
                traceback.print_exception(exc, file=sys.stderr)
            err_console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(code) from None


app = typer.Typer(
    cls=FriendlyGroup,
    help="Scheduled, unattended ad creation on Prefect.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The application database.", no_args_is_help=True)
jobs_app = typer.Typer(help="Scheduled jobs (each one a Prefect deployment).", no_args_is_help=True)
templates_app = typer.Typer(help="The template catalog.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(jobs_app, name="jobs")
app.add_typer(templates_app, name="templates")

console = Console()
err_console = Console(stderr=True)

TenantOption = typer.Option(
    None, "--tenant", envvar="AD_SCHEDULER_TENANT_ID", help="Tenant id (default: settings)."
)


@app.callback()
def main(
    debug: bool = typer.Option(
        False, "--debug", envvar="AD_SCHEDULER_DEBUG", help="Print tracebacks of errors."
    ),
) -> None:
    """Scheduled, unattended ad creation on Prefect."""


#: Database attempts for a CLI command: a person waiting at a prompt is told at once that the
#: database is unreachable (flows ride out ~25 s of outage; `AD_SCHEDULER_DB_RETRY_ATTEMPTS`
#: set explicitly wins here too).
CLI_DB_ATTEMPTS = 2


def _run(call: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        try:
            return await call()
        finally:
            await dispose_engines()

    from db import session as db_session

    previous = db_session.DB_RETRY
    if not get_settings().db_retry_attempts_configured and previous.attempts is None:
        db_session.DB_RETRY = dataclasses.replace(previous, attempts=CLI_DB_ATTEMPTS)
    try:
        return asyncio.run(main())
    finally:
        db_session.DB_RETRY = previous


def _tenant(tenant: str | None) -> uuid.UUID:
    raw = tenant or get_settings().tenant_id
    return _uuid(raw, "--tenant")


def _uuid(raw: str, option: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        raise UsageProblem(
            f"{option}: {raw!r} is not a UUID; allowed: an id like "
            "3f2b8c1e-0000-4000-8000-000000000000"
        ) from None


# --- db ---------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(
    revision: str = typer.Argument("head", help="Target revision."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print what would change (an adoption plan too); write nothing."
    ),
    tenant: str | None = TenantOption,
) -> None:
    """Create or migrate the application database to the latest schema.

    A PostgreSQL database that already holds the seed's tables (and your own products/ad_runs)
    is adopted in place: every table and row kept, what the project needs added, rows without a
    tenant given --tenant. Run `ad-scheduler jobs adopt` afterwards to deploy its jobs.
    """
    tenant_id = _tenant(tenant)
    result = _run(lambda: aupgrade(revision=revision, tenant_id=tenant_id, dry_run=dry_run))
    url = result.url.render_as_string(hide_password=True)
    if result.adoption is not None:
        typer.echo(result.adoption.render())
    if dry_run:
        pending = ", ".join(result.pending) or "none"
        typer.echo(f"dry run on {url}: nothing written; revisions to apply: {pending}")
    elif result.adoption is not None and result.before == ():
        typer.echo(f"database adopted and stamped at {', '.join(result.after)}: {url}")
        typer.echo("next: `ad-scheduler templates sync`, then `ad-scheduler jobs adopt`")
    else:
        typer.echo(f"database migrated to {revision}: {url}")


@app.command("demo")
def demo() -> None:
    """Run the scheduled demo end to end on this machine (no services needed)."""
    from scheduler.demo import run_demo

    run_demo()


# --- jobs -------------------------------------------------------------------------------------


def load_spec_file(path: Path) -> list[dict[str, Any]]:
    """Job specs from a YAML or JSON file: one job, a list of jobs, or `{jobs: [...]}`."""
    text = path.read_text()
    data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    if isinstance(data, dict) and "jobs" in data:
        data = data["jobs"]
    items = data if isinstance(data, list) else [data]
    if not all(isinstance(item, dict) for item in items):
        raise UsageProblem(f"{path}: expected a job mapping, a list of them, or 'jobs:'")
    base = path.parent
    for item in items:
        # Uploaded template files are relative to the spec file.
        files = (item.get("templates") or {}).get("files")
        if isinstance(files, list):
            item["templates"]["files"] = [str((base / f).resolve()) for f in files]
    return items


def spec_from_flags(**flags: Any) -> dict[str, Any]:
    """A job spec dict from `jobs create` flags (validation happens in `JobSpec`)."""
    if flags["at"]:
        schedule: dict[str, Any] = {
            "type": "one_time",
            "at": flags["at"],
            "timezone": flags["timezone"],
        }
    else:
        schedule = {
            "type": "recurring",
            "cron": flags["cron"],
            "timezone": flags["timezone"],
            "jitter_seconds": flags["jitter"],
        }
    if flags["upload"]:
        templates: dict[str, Any] = {"mode": "uploaded", "files": [str(p) for p in flags["upload"]]}
    elif flags["template"]:
        templates = {"mode": "specific", "templates": list(flags["template"])}
    else:
        templates = {
            "mode": "unused",
            "count": flags["unused"],
            "when_exhausted": flags["when_exhausted"],
        }
    ad: dict[str, Any] = {
        "variations": flags["variations"],
        "content_source": flags["content_source"],
        "color_mode": flags["color_mode"],
        "image_mode": flags["image_mode"],
    }
    if flags["product_image"]:
        ad["product_image"] = flags["product_image"]
    export: dict[str, Any] = {"destination": flags["export"]}
    if flags["email"]:
        export["email_recipients"] = list(flags["email"])
    if flags["email_block"]:
        export["email_block"] = flags["email_block"]
    if flags["slack_webhook_url"]:
        export["slack_webhook_url"] = flags["slack_webhook_url"]
    if flags["slack_webhook_block"]:
        export["slack_webhook_block"] = flags["slack_webhook_block"]
    spec: dict[str, Any] = {
        "name": flags["name"],
        "product_id": flags["product"],
        "description": flags["description"],
        "schedule": schedule,
        "templates": templates,
        "ad": ad,
        "export": export,
        "overlap": flags["overlap"],
        "misfire_grace_seconds": flags["misfire_grace"],
    }
    if flags["max_runs"] is not None:
        spec["max_runs"] = flags["max_runs"]
    return spec


#: Flags that describe one job: meaningless next to `--file` (which holds whole specs).
FILE_EXCLUSIVE = (
    "name",
    "product",
    "cron",
    "at",
    "max_runs",
    "template",
    "upload",
    "product_image",
    "email",
    "email_block",
    "slack_webhook_block",
)


@jobs_app.command("create")
def jobs_create(  # noqa: PLR0917 (one typer option per parameter)
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="YAML/JSON spec file (one job or a list)."),
    ] = None,
    apply: bool = typer.Option(
        False, "--apply", help="Update the job of the same name if it exists."
    ),
    name: str | None = typer.Option(None, help="Job name (unique per tenant)."),
    product: str | None = typer.Option(None, help="Product id."),
    cron: str | None = typer.Option(None, help="Cron expression, e.g. '0 9 * * 1'."),
    timezone: str = typer.Option("UTC", "--timezone", "--tz", help="IANA time zone."),
    at: str | None = typer.Option(None, help="One-time run at this ISO datetime (with offset)."),
    jitter: int = typer.Option(0, help="Random delay up to N seconds per run."),
    max_runs: int | None = typer.Option(None, help="Stop after N completed runs."),
    unused: int = typer.Option(3, help="Unused templates per run."),
    when_exhausted: str = typer.Option("recycle", help=" | ".join(EXHAUSTED_POLICIES) + "."),
    template: Annotated[
        list[str] | None, typer.Option(help="Specific template id/storage name (repeat).")
    ] = None,
    upload: Annotated[
        list[Path] | None, typer.Option(help="Upload a template image (repeat).")
    ] = None,
    variations: int = typer.Option(3, help="Ads per template."),
    content_source: str = typer.Option("hooks", help="hooks | benefits | recreate_template."),
    color_mode: str = typer.Option("original", help="original | brand | complementary."),
    image_mode: str = typer.Option("auto", help="auto | specific."),
    product_image: str | None = typer.Option(
        None, help="Product image path (image mode specific)."
    ),
    export: str = typer.Option("none", help="none | email | slack | both."),
    email: Annotated[list[str] | None, typer.Option(help="Email recipient (repeat).")] = None,
    email_block: str | None = typer.Option(None, help="Resend email block name."),
    slack_webhook_url: str | None = typer.Option(
        None,
        envvar="AD_SCHEDULER_SLACK_WEBHOOK_URL",
        help="Slack webhook URL (stored in a block; prefer the env var over the flag).",
    ),
    slack_webhook_block: str | None = typer.Option(None, help="Existing Slack webhook block name."),
    overlap: str = typer.Option("skip", help="skip | queue."),
    misfire_grace: int = typer.Option(
        3600,
        help="Skip runs starting more than N s late: 0 = never skip, else 60..604800.",
    ),
    description: str = typer.Option("", help="Free text shown in the Prefect UI."),
    tenant: str | None = TenantOption,
) -> None:
    """Register a job from flags or from a YAML/JSON file (files are applied idempotently)."""
    flags = dict(locals())
    if cron is not None and at is not None:
        raise UsageProblem(
            "--cron and --at both given; allowed: --cron (a recurring job) or --at (a one-time "
            "job), not both"
        )
    if file is not None:
        given = [f"--{k.replace('_', '-')}" for k in FILE_EXCLUSIVE if flags[k]]
        if given:
            raise UsageProblem(
                f"--file and {', '.join(given)} both given; allowed: a spec file, or flags"
            )
        specs, apply = load_spec_file(file), True
    else:
        missing = [f"--{k}" for k in ("name", "product") if not flags[k]]
        if not (cron or at):
            missing.append("--cron or --at")
        if missing:
            raise UsageProblem(f"missing {', '.join(missing)} (or give --file)")
        specs = [spec_from_flags(**flags)]

    async def _go() -> list[ScheduledJob]:
        done = []
        async with AdScheduler(_tenant(tenant)) as ads:
            with Progress(console=err_console, transient=True) as progress:
                task = progress.add_task("registering jobs", total=len(specs))
                for spec in specs:
                    done.append(await (ads.apply(spec) if apply else ads.create(spec)))
                    progress.advance(task)
        return done

    for job in _run(_go):
        console.print(
            f"[green]✓[/green] {job.name}  id={job.id}  deployment="
            f"{SCHEDULED_JOB_FLOW}/{job.deployment_name}  next run {_when(job.next_run_at, job)}"
        )


def _when(value: datetime | None, job: ScheduledJob) -> str:
    if value is None:
        return "—"
    return value.astimezone(ZoneInfo(job.timezone)).strftime("%Y-%m-%d %H:%M %Z")


def _schedule_text(job: ScheduledJob) -> str:
    if job.schedule_type == "recurring":
        return f"{job.cron_expression} ({job.timezone})"
    return f"once at {_when(job.scheduled_at, job)}"


@jobs_app.command("adopt")
def jobs_adopt(
    email_block: str | None = typer.Option(
        None, help="Resend email block for jobs that email their ads (the old global key)."
    ),
    slack_webhook_block: str | None = typer.Option(
        None, help="Slack webhook block for Slack jobs without their own webhook URL."
    ),
    tenant: str | None = TenantOption,
) -> None:
    """Deploy the jobs already in the database (after `db upgrade` adopted it).

    Every job without a deployment gets one (schedule, status, runs and parameters kept); a job
    that cannot be adopted is listed with the field and the reason and left as it is.
    Exits with 1 when any job was not adopted.
    """
    report = _run(
        lambda: _adopt_with(
            _tenant(tenant), email_block=email_block, slack_webhook_block=slack_webhook_block
        )
    )
    console.print(report.render(), markup=False, highlight=False)
    if report.failed:
        raise typer.Exit(1)


async def _adopt_with(tenant_id: uuid.UUID, **options: str | None) -> JobAdoptionReport:
    async with AdScheduler(tenant_id) as ads:
        return await ads.adopt_existing(**options)


@jobs_app.command("list")
def jobs_list(
    brand: str | None = typer.Option(None, help="Only this brand id."),
    product: str | None = typer.Option(None, help="Only this product id."),
    status: str | None = typer.Option(None, help="active | paused | completed."),
    tenant: str | None = TenantOption,
) -> None:
    """A table of the tenant's jobs."""
    if status is not None and status not in JOB_STATUSES:
        raise UsageProblem(f"--status: {status!r}; allowed: {' | '.join(JOB_STATUSES)}")

    async def _go() -> tuple[
        list[ScheduledJob], dict[uuid.UUID, str], dict[uuid.UUID, ScheduledJobRun]
    ]:
        from db.queries.job_runs import latest_runs
        from db.session import session_scope

        ads = AdScheduler(_tenant(tenant))
        jobs = await ads.list(
            brand_id=_uuid(brand, "--brand") if brand else None,
            product_id=_uuid(product, "--product") if product else None,
            status=status,
        )
        async with session_scope() as session:
            last = await latest_runs(session, [j.id for j in jobs])
        return jobs, await ads.product_names({j.product_id for j in jobs}), last

    jobs, names, last = _run(_go)
    table = Table(title=f"{len(jobs)} scheduled job(s)")
    for column in ("Name", "Product", "Schedule", "Status", "Runs", "Next run", "Last run"):
        table.add_column(column)
    for job in jobs:
        runs = f"{job.runs_completed or 0}/{job.max_runs or '∞'}"
        status_text = job.status or "active"
        if job.status == "paused" and job.pause_note:
            status_text += f" ({job.pause_note})"
        # The stored next run is kept true (empty while paused or completed) by the SDK and
        # the run history; list and show print the same value.
        next_run = _when(job.next_run_at, job)
        table.add_row(
            job.name,
            names.get(job.product_id, str(job.product_id)),
            _schedule_text(job),
            status_text,
            runs,
            next_run,
            _last_run_text(last.get(job.id)),
        )
    console.print(table)


def _last_run_text(run: ScheduledJobRun | None) -> str:
    """ "failed: Crashed: …" — the latest run's status and, when it did not complete, why."""
    if run is None:
        return "—"
    reason = run.skip_reason or run.error_message if run.status != "completed" else None
    return f"{run.status}: {reason[:80]}" if reason else str(run.status)


def _runs_table(job: ScheduledJob, runs: list[ScheduledJobRun]) -> Table:
    table = Table(title=f"runs of {job.name}")
    for column in (
        "Scheduled for",
        "Trigger",
        "Status",
        "Started",
        "Finished",
        "Templates",
        "Note",
    ):
        table.add_column(column)
    for run in runs:
        note = run.skip_reason or (run.error_message or "")[:80]
        table.add_row(
            _when(run.scheduled_for, job),
            run.trigger,
            run.status or "",
            _when(run.started_at, job),
            _when(run.completed_at, job),
            ", ".join(run.templates_used or []),
            note,
        )
    return table


@jobs_app.command("show")
def jobs_show(
    job_ref: str = typer.Argument(..., metavar="JOB", help="Job id or name."),
    tenant: str | None = TenantOption,
) -> None:
    """A job's details and its recent runs."""

    async def _go() -> tuple[ScheduledJob, list[ScheduledJobRun], dict[uuid.UUID, str]]:
        ads = AdScheduler(_tenant(tenant))
        job = await ads.get(job_ref)
        return job, await ads.runs(job.id, limit=10), await ads.product_names({job.product_id})

    job, runs, names = _run(_go)
    params = job.parameters or {}
    rows = [
        ("id", str(job.id)),
        ("product", f"{names.get(job.product_id, '')} ({job.product_id})"),
        ("schedule", _schedule_text(job)),
        ("status", (job.status or "") + (f" — {job.pause_note}" if job.pause_note else "")),
        ("runs", f"{job.runs_completed or 0}/{job.max_runs or '∞'}"),
        ("next run", _when(job.next_run_at, job)),
        ("last run", _when(job.last_run_at, job)),
        (
            "templates",
            f"{job.template_mode}: {job.template_count}"
            + (f" {job.template_ids}" if job.template_ids else ""),
        ),
        ("ads", json.dumps(params.get("ad", {}))),
        ("export", json.dumps(params.get("export", {}))),
        ("overlap / misfire", f"{job.overlap_policy} / {job.misfire_grace_seconds} s"),
        ("deployment", f"{SCHEDULED_JOB_FLOW}/{job.deployment_name} ({job.prefect_deployment_id})"),
    ]
    detail = Table(show_header=False, title=job.name)
    detail.add_column(style="bold")
    detail.add_column()
    for key, value in rows:
        detail.add_row(key, value)
    console.print(detail)
    console.print(_runs_table(job, runs))


@jobs_app.command("pause")
def jobs_pause(
    job_ref: str = typer.Argument(..., metavar="JOB", help="Job id or name."),
    note: str | None = typer.Option(None, "--note", help="Why (shown in `jobs list`)."),
    tenant: str | None = TenantOption,
) -> None:
    """Stop scheduling runs of a job."""
    job = _run(lambda: AdScheduler(_tenant(tenant)).pause(job_ref, note))
    console.print(f"paused {job.name}" + (f": {note}" if note else ""))


@jobs_app.command("resume")
def jobs_resume(
    job_ref: str = typer.Argument(..., metavar="JOB", help="Job id or name."),
    tenant: str | None = TenantOption,
) -> None:
    """Schedule runs of a paused job again."""
    job = _run(lambda: AdScheduler(_tenant(tenant)).resume(job_ref))
    console.print(f"resumed {job.name}; next run {_when(job.next_run_at, job)}")


@jobs_app.command("delete")
def jobs_delete(
    job_ref: str = typer.Argument(..., metavar="JOB", help="Job id or name."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
    tenant: str | None = TenantOption,
) -> None:
    """Delete a job's deployment and scheduled runs (its run history is kept)."""
    if not yes:
        typer.confirm(f"Delete job {job_ref!r} and its scheduled runs?", abort=True)
    job = _run(lambda: AdScheduler(_tenant(tenant)).delete(job_ref))
    console.print(f"deleted {job.name} (run history kept)")


@jobs_app.command("run-now")
def jobs_run_now(
    job_ref: str = typer.Argument(..., metavar="JOB", help="Job id or name."),
    tenant: str | None = TenantOption,
) -> None:
    """Trigger a manual run now (recorded, not counted towards max_runs)."""
    run_id = _run(lambda: AdScheduler(_tenant(tenant)).run_now(job_ref))
    console.print(f"triggered flow run {run_id}")


@app.command("runs")
def runs_command(
    job_ref: str = typer.Argument(..., metavar="JOB", help="Job id or name."),
    limit: int = typer.Option(20, help="How many, newest first."),
    tenant: str | None = TenantOption,
) -> None:
    """A job's run history (deleted jobs included)."""

    async def _go() -> tuple[ScheduledJob, list[ScheduledJobRun]]:
        ads = AdScheduler(_tenant(tenant))
        runs = await ads.runs(job_ref, limit=limit)
        return await ads.history_job(job_ref), runs

    job, runs = _run(_go)
    console.print(_runs_table(job, runs))


# --- templates --------------------------------------------------------------------------------


@templates_app.command("sync")
def templates_sync(
    brand: str | None = typer.Option(None, help="Catalog new templates under this brand id."),
    tenant: str | None = TenantOption,
) -> None:
    """Catalog the templates in template storage (add new, deactivate vanished)."""
    from flows.templates import sync_template_catalog

    report = _run(
        lambda: sync_template_catalog(
            _tenant(tenant), brand_id=_uuid(brand, "--brand") if brand else None
        )
    )
    console.print(
        f"added {len(report.added)}, reactivated {len(report.reactivated)}, "
        f"deactivated {len(report.deactivated)}, unchanged {report.unchanged}"
    )


@templates_app.command("list")
def templates_list(
    inactive: bool = typer.Option(False, "--inactive", help="Only templates out of rotation."),
    tenant: str | None = TenantOption,
) -> None:
    """The template catalog, with why a template is out of rotation."""
    from db.queries.catalog import list_templates
    from db.session import session_scope

    async def _go() -> list[Any]:
        async with session_scope() as session:
            return await list_templates(session, tenant_id=_tenant(tenant), inactive_only=inactive)

    rows = _run(_go)
    table = Table(title=f"{len(rows)} template(s)")
    for column in ("Template", "Source", "Size", "Status", "Why"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.storage_name,
            row.source,
            f"{row.width}x{row.height}",
            "active" if row.active else "inactive",
            row.inactive_reason or "",
        )
    console.print(table)


@templates_app.command("enable")
def templates_enable(
    names: Annotated[list[str], typer.Argument(metavar="NAME...", help="Template storage names.")],
    tenant: str | None = TenantOption,
) -> None:
    """Put templates back in rotation (after fixing what got them set aside)."""
    from db.queries.templates import enable_template
    from db.session import session_scope

    async def _go() -> list[bool]:
        tenant_id = _tenant(tenant)
        async with session_scope() as session:
            return [
                await enable_template(session, tenant_id=tenant_id, template=name) for name in names
            ]

    changed = _run(_go)
    for name, did in zip(names, changed, strict=True):
        console.print(f"{name}: {'enabled' if did else 'already active'}")


def _mount_optional_commands() -> None:
    """Mount `scheduler/commands/*.py` modules that expose `register(app)` (e.g. export)."""
    folder = Path(__file__).parent / "commands"
    for name in ("export",):
        if (folder / f"{name}.py").exists():
            importlib.import_module(f"scheduler.commands.{name}").register(app)


_mount_optional_commands()


if __name__ == "__main__":
    app()
