"""`ad-scheduler jobs …` and `ad-scheduler runs`: scheduled jobs through the SDK.

Choices come from the spec's own vocabularies and defaults from the spec's own fields, so the
command line can never offer what the spec refuses or default to what it would not.
"""

from __future__ import annotations

import json
import unicodedata
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from domain.params import AdParameters
from domain.spec import ExportSpec, JobSpec, RecurringSchedule, UnusedTemplates
from domain.vocab import (
    JOB_STATUSES,
    SCHEDULED_JOB_FLOW,
    ColorMode,
    ContentSource,
    Destination,
    ExhaustedPolicy,
    ImageMode,
    OverlapPolicy,
)
from scheduler.commands.common import (
    TenantOption,
    UsageProblem,
    console,
    err_console,
    parse_uuid,
    run,
    tenant_id,
    when,
)

if TYPE_CHECKING:
    from db.read_models import JobRunView, JobView, RunApprovalView
    from scheduler.adopt import JobAdoptionReport

jobs_app = typer.Typer(help="Scheduled jobs (each one a Prefect deployment).", no_args_is_help=True)


def _default(model: Any, field: str) -> Any:
    """A spec field's default (the CLI never restates one)."""
    return model.model_fields[field].default


#: The spec's own defaults, read once: the command line never restates one.
DEFAULT_COLOR_MODE = _default(AdParameters, "color_mode")
DEFAULT_CONTENT_SOURCE = _default(AdParameters, "content_source")
DEFAULT_IMAGE_MODE = _default(AdParameters, "image_mode")
DEFAULT_VARIATIONS = _default(AdParameters, "variations")
DEFAULT_DESTINATION = _default(ExportSpec, "destination")
DEFAULT_DESCRIPTION = _default(JobSpec, "description")
DEFAULT_MISFIRE_GRACE_SECONDS = _default(JobSpec, "misfire_grace_seconds")
DEFAULT_OVERLAP = _default(JobSpec, "overlap")
DEFAULT_JITTER_SECONDS = _default(RecurringSchedule, "jitter_seconds")
DEFAULT_TIMEZONE = _default(RecurringSchedule, "timezone")
DEFAULT_COUNT = _default(UnusedTemplates, "count")
DEFAULT_WHEN_EXHAUSTED = _default(UnusedTemplates, "when_exhausted")


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


def load_spec_file(path: Path) -> list[dict[str, Any]]:
    """Job specs from a YAML or JSON file: one job, a list of jobs, or `{jobs: [...]}`."""
    import yaml

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
    if flags.get("approval"):  # approval hook
        spec["approval"] = {
            "enabled": True,
            "timeout": flags.get("approval_timeout") or "24h",
            "on_timeout": flags.get("on_timeout") or "discard",
        }
    return spec


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
    product: str | None = typer.Option(None, help="Product id or name."),
    cron: str | None = typer.Option(None, help="Cron expression, e.g. '0 9 * * 1'."),
    timezone: str = typer.Option(DEFAULT_TIMEZONE, "--timezone", "--tz", help="IANA time zone."),
    at: str | None = typer.Option(None, help="One-time run at this ISO datetime (with offset)."),
    jitter: int = typer.Option(
        DEFAULT_JITTER_SECONDS, help="Random delay up to N seconds per run."
    ),
    max_runs: int | None = typer.Option(None, help="Stop after N completed runs."),
    unused: int = typer.Option(DEFAULT_COUNT, help="Unused templates per run."),
    when_exhausted: Annotated[
        ExhaustedPolicy, typer.Option(help="When no unused template is left.")
    ] = DEFAULT_WHEN_EXHAUSTED,
    template: Annotated[
        list[str] | None, typer.Option(help="Specific template id/storage name (repeat).")
    ] = None,
    upload: Annotated[
        list[Path] | None, typer.Option(help="Upload a template image (repeat).")
    ] = None,
    variations: int = typer.Option(DEFAULT_VARIATIONS, help="Ads per template."),
    content_source: Annotated[
        ContentSource, typer.Option(help="Where headlines come from.")
    ] = DEFAULT_CONTENT_SOURCE,
    color_mode: Annotated[ColorMode, typer.Option(help="Ad colours.")] = DEFAULT_COLOR_MODE,
    image_mode: Annotated[
        ImageMode, typer.Option(help="Which product image.")
    ] = DEFAULT_IMAGE_MODE,
    product_image: str | None = typer.Option(
        None, help="Product image path (image mode specific)."
    ),
    export: Annotated[
        Destination, typer.Option(help="Where finished ads go.")
    ] = DEFAULT_DESTINATION,
    email: Annotated[list[str] | None, typer.Option(help="Email recipient (repeat).")] = None,
    email_block: str | None = typer.Option(None, help="Resend email block name."),
    slack_webhook_url: str | None = typer.Option(
        None,
        help="Slack webhook URL (stored in a block; prefer AD_SCHEDULER_SLACK_WEBHOOK_URL over "
        "the flag).",
    ),
    slack_webhook_block: str | None = typer.Option(None, help="Existing Slack webhook block name."),
    overlap: Annotated[
        OverlapPolicy, typer.Option(help="A run due while one is running.")
    ] = DEFAULT_OVERLAP,
    misfire_grace: int = typer.Option(
        DEFAULT_MISFIRE_GRACE_SECONDS,
        help="Skip runs starting more than N s late: 0 = never skip, else 60..604800.",
    ),
    description: str = typer.Option(DEFAULT_DESCRIPTION, help="Free text shown in the Prefect UI."),
    # approval hook: the job option `approval` (domain/approval.py)
    approval: bool = typer.Option(False, "--approval", help="Wait for approval before export."),
    approval_timeout: str = typer.Option("24h", help="Approval wait: 5m..14d, e.g. 24h."),
    on_timeout: str = typer.Option("discard", help="After the approval wait: discard | export."),
    tenant: str | None = TenantOption,
) -> None:
    """Register a job from flags or from a YAML/JSON file (files are applied idempotently).

    The product may be given by id or by name (`--product`, or `product_id` in a file).
    """
    flags = dict(locals())
    flags["slack_webhook_url"] = slack_webhook_url or _configured_webhook_url()
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
    tenant_uuid = tenant_id(tenant)

    async def go() -> list[JobView]:
        from rich.progress import Progress

        from scheduler.sdk import AdScheduler

        done = []
        async with AdScheduler(tenant_uuid) as ads:
            for spec in specs:
                ref = spec.get("product_id")
                if isinstance(ref, str) and ref and _not_uuid(ref):
                    spec["product_id"] = str(await ads.catalog.resolve_product_id(ref))
            with Progress(console=err_console, transient=True) as progress:
                task = progress.add_task("registering jobs", total=len(specs))
                for spec in specs:
                    done.append(await (ads.apply(spec) if apply else ads.create(spec)))
                    progress.advance(task)
        return done

    for job in run(go):
        console.print(
            f"[green]✓[/green] {job.name}  id={job.id}  deployment="
            f"{SCHEDULED_JOB_FLOW}/{job.deployment_name}  next run "
            f"{when(job.next_run_at, job.timezone)}"
        )


def _configured_webhook_url() -> str | None:
    """`AD_SCHEDULER_SLACK_WEBHOOK_URL`, through the settings."""
    from config import get_settings

    secret = get_settings().slack_webhook_url
    return secret.get_secret_value() if secret is not None else None


def _not_uuid(ref: str) -> bool:
    try:
        uuid.UUID(ref)
    except ValueError:
        return True
    return False


def _schedule_text(job: JobView) -> str:
    if job.schedule_type == "recurring":
        return f"{job.cron_expression} ({job.timezone})"
    return f"once at {when(job.scheduled_at, job.timezone)}"


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
    tenant_uuid = tenant_id(tenant)

    async def go() -> JobAdoptionReport:
        from scheduler.sdk import AdScheduler

        async with AdScheduler(tenant_uuid) as ads:
            return await ads.adopt_existing(
                email_block=email_block, slack_webhook_block=slack_webhook_block
            )

    report = run(go)
    console.print(report.render(), markup=False, highlight=False)
    if report.failed:
        raise typer.Exit(1)


@jobs_app.command("list")
def jobs_list(
    brand: str | None = typer.Option(None, help="Only this brand id."),
    product: str | None = typer.Option(None, help="Only this product id."),
    status: str | None = typer.Option(
        None, help=f"Only jobs in this status: {' | '.join(JOB_STATUSES)}."
    ),
    tenant: str | None = TenantOption,
) -> None:
    """A table of the tenant's jobs."""
    if status is not None and status not in JOB_STATUSES:
        raise UsageProblem(f"--status: {status!r}; allowed: {' | '.join(JOB_STATUSES)}")
    brand_id = parse_uuid(brand, "--brand") if brand else None
    product_id = parse_uuid(product, "--product") if product else None
    tenant_uuid = tenant_id(tenant)

    async def go() -> tuple[list[JobView], dict[uuid.UUID, str], dict[uuid.UUID, JobRunView]]:
        from scheduler.job_reads import JobReader

        ads = JobReader(tenant_uuid)
        jobs = await ads.list_jobs(brand_id=brand_id, product_id=product_id, status=status)
        last = await ads.latest_runs([j.id for j in jobs])
        return jobs, await ads.product_names({j.product_id for j in jobs}), last

    jobs, names, last = run(go)
    table = Table(title=f"{len(jobs)} scheduled job(s)")
    for column in ("Name", "Product", "Schedule", "Status", "Runs", "Next run", "Last run"):
        table.add_column(column)
    for job in jobs:
        status_text = job.status or "active"
        if job.status == "paused" and job.pause_note:
            status_text += f" ({job.pause_note})"
        # The stored next run is kept true (empty while paused or completed) by the SDK and
        # the run history; list and show print the same value.
        table.add_row(
            job.name,
            names.get(job.product_id, str(job.product_id)),
            _schedule_text(job),
            status_text,
            f"{job.runs_completed or 0}/{job.max_runs or '∞'}",
            when(job.next_run_at, job.timezone),
            _last_run_text(last.get(job.id)),
        )
    console.print(table)


def _last_run_text(run: JobRunView | None) -> str:
    """ "failed: Crashed: …" — the latest run's status and, when it did not complete, why."""
    if run is None:
        return "—"
    reason = run.skip_reason or run.error_message if run.status != "completed" else None
    return f"{run.status}: {reason[:80]}" if reason else str(run.status)


def _runs_table(
    job: JobView, runs: list[JobRunView], approvals: dict[uuid.UUID, RunApprovalView]
) -> Table:
    """The runs, newest first; an "Approval" column only when one of them had an approval."""
    with_approval = any(run_row.id in approvals for run_row in runs)
    table = Table(title=f"runs of {job.name}")
    columns = ["Scheduled for", "Trigger", "Status", "Started", "Finished", "Templates"]
    for column in [*columns, *(["Approval"] if with_approval else []), "Note"]:
        table.add_column(column)
    for run_row in runs:
        note = run_row.skip_reason or (run_row.error_message or "")[:80]
        cells = [
            when(run_row.scheduled_for, job.timezone),
            run_row.trigger,
            run_row.status or "",
            when(run_row.started_at, job.timezone),
            when(run_row.completed_at, job.timezone),
            ", ".join(run_row.templates_used or []),
        ]
        if with_approval:
            approval = approvals.get(run_row.id)
            cells.append(approval_state(approval, job.timezone) if approval else "—")
        table.add_row(*cells, note)
    return table


#: Characters that reorder or hide text on a terminal without being control characters.
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def plain_text(text: str) -> Text:
    """Person-written text (a note, a reviewer's name) for the terminal, shown as written.

    Never read as rich markup (`[bold]` stays literal), and control characters (ANSI escape
    sequences, carriage returns, bidi overrides) are shown as `\\x1b`/`\\u202e` escapes
    instead of reaching the terminal, where they could recolour, rewrite or reorder what a
    person reads. Line breaks and tabs are kept; nothing is cut.
    """
    out = []
    for char in text.replace("\r\n", "\n"):
        if char in "\n\t":
            out.append(char)
        elif unicodedata.category(char) == "Cc" or char in _BIDI_CONTROLS:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return Text("".join(out))


def approval_state(approval: RunApprovalView, timezone: str) -> str:
    """A run's approval in a few words: "awaiting until 2026-12-01 09:00 EST, then discard",
    "approved 2, rejected 1" or "timed out → export (approved 3, rejected 0)"."""
    counts = f"approved {approval.approved_count}, rejected {approval.rejected_count}"
    if approval.status == "awaiting":
        return f"awaiting until {when(approval.deadline_at, timezone)}, then {approval.on_timeout}"
    if approval.status == "timed_out":
        return f"timed out → {approval.on_timeout} ({counts})"
    return counts


def _decided_by(approval: RunApprovalView) -> Text:
    """ "alice (via sdk)", "(via timeout)", or "—" while awaiting."""
    if approval.decided_via is None:
        return Text("—")
    who = plain_text(approval.decided_by or "")
    return who.append(f"{' ' if approval.decided_by else ''}(via {approval.decided_via})")


def _approvals_table(
    job: JobView, runs: list[JobRunView], approvals: dict[uuid.UUID, RunApprovalView]
) -> Table | None:
    """The approval of each listed run that had one (newest run first); None when none did."""
    rows = [(run_row, approvals[run_row.id]) for run_row in runs if run_row.id in approvals]
    if not rows:
        return None
    table = Table(title=f"approval decisions of {job.name}'s runs")
    table.add_column("Scheduled for")
    # Whole, on one line: it is what `ad-scheduler approvals decide` takes.
    table.add_column("Flow run", no_wrap=True, min_width=36)
    table.add_column("Approval")
    table.add_column("Decided by")
    table.add_column("Decided")
    # A note is kept whole: folded onto more lines rather than cut with an ellipsis.
    table.add_column("Note", overflow="fold")
    for run_row, approval in rows:
        table.add_row(
            when(run_row.scheduled_for, job.timezone),
            str(approval.flow_run_id),
            approval_state(approval, job.timezone),
            _decided_by(approval),
            when(approval.decided_at, job.timezone),
            plain_text(approval.note or ""),
        )
    return table


def _print_runs(
    job: JobView, runs: list[JobRunView], approvals: dict[uuid.UUID, RunApprovalView]
) -> None:
    console.print(_runs_table(job, runs, approvals))
    decisions = _approvals_table(job, runs, approvals)
    if decisions is not None:
        console.print(decisions)


@jobs_app.command("show")
def jobs_show(
    job_ref: str = typer.Argument(..., metavar="JOB", help="Job id or name."),
    tenant: str | None = TenantOption,
) -> None:
    """A job's details and its recent runs."""
    tenant_uuid = tenant_id(tenant)

    async def go() -> tuple[
        JobView, list[JobRunView], dict[uuid.UUID, RunApprovalView], dict[uuid.UUID, str]
    ]:
        from scheduler.job_reads import JobReader

        ads = JobReader(tenant_uuid)
        job = await ads.get(job_ref)
        runs = await ads.runs(job.id, limit=10)
        approvals = await ads.run_approvals(r.id for r in runs)
        return job, runs, approvals, await ads.product_names({job.product_id})

    job, runs, approvals, names = run(go)
    params = job.parameters or {}
    rows = [
        ("id", str(job.id)),
        ("product", f"{names.get(job.product_id, '')} ({job.product_id})"),
        ("schedule", _schedule_text(job)),
        ("status", (job.status or "") + (f" — {job.pause_note}" if job.pause_note else "")),
        ("runs", f"{job.runs_completed or 0}/{job.max_runs or '∞'}"),
        ("next run", when(job.next_run_at, job.timezone)),
        ("last run", when(job.last_run_at, job.timezone)),
        (
            "templates",
            f"{job.template_mode}: {job.template_count}"
            + (f" {job.template_ids}" if job.template_ids else ""),
        ),
        ("ads", json.dumps(params.get("ad", {}))),
        ("export", json.dumps(params.get("export", {}))),
        ("approval", json.dumps(params.get("approval", {"enabled": False}))),  # approval hook
        ("overlap / misfire", f"{job.overlap_policy} / {job.misfire_grace_seconds} s"),
        ("deployment", f"{SCHEDULED_JOB_FLOW}/{job.deployment_name} ({job.prefect_deployment_id})"),
    ]
    detail = Table(show_header=False, title=job.name)
    detail.add_column(style="bold")
    detail.add_column()
    for key, value in rows:
        detail.add_row(key, value)
    console.print(detail)
    _print_runs(job, runs, approvals)


def _sdk_call(tenant: str | None, call: Any) -> Any:
    """Run `call(ads)` on an SDK for the tenant (no shared Prefect client needed)."""
    tenant_uuid = tenant_id(tenant)

    async def go() -> Any:
        from scheduler.sdk import AdScheduler

        return await call(AdScheduler(tenant_uuid))

    return run(go)


@jobs_app.command("pause")
def jobs_pause(
    job_ref: str = typer.Argument(..., metavar="JOB", help="Job id or name."),
    note: str | None = typer.Option(None, "--note", help="Why (shown in `jobs list`)."),
    tenant: str | None = TenantOption,
) -> None:
    """Stop scheduling runs of a job."""
    job = _sdk_call(tenant, lambda ads: ads.pause(job_ref, note))
    console.print(f"paused {job.name}" + (f": {note}" if note else ""))


@jobs_app.command("resume")
def jobs_resume(
    job_ref: str = typer.Argument(..., metavar="JOB", help="Job id or name."),
    tenant: str | None = TenantOption,
) -> None:
    """Schedule runs of a paused job again."""
    job = _sdk_call(tenant, lambda ads: ads.resume(job_ref))
    console.print(f"resumed {job.name}; next run {when(job.next_run_at, job.timezone)}")


@jobs_app.command("delete")
def jobs_delete(
    job_ref: str = typer.Argument(..., metavar="JOB", help="Job id or name."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
    tenant: str | None = TenantOption,
) -> None:
    """Delete a job's deployment and scheduled runs (its run history is kept)."""
    if not yes:
        typer.confirm(f"Delete job {job_ref!r} and its scheduled runs?", abort=True)
    job = _sdk_call(tenant, lambda ads: ads.delete(job_ref))
    console.print(f"deleted {job.name} (run history kept)")


@jobs_app.command("run-now")
def jobs_run_now(
    job_ref: str = typer.Argument(..., metavar="JOB", help="Job id or name."),
    tenant: str | None = TenantOption,
) -> None:
    """Trigger a manual run now (recorded, not counted towards max_runs)."""
    run_id = _sdk_call(tenant, lambda ads: ads.run_now(job_ref))
    console.print(f"triggered flow run {run_id}")


def runs_command(
    job_ref: str = typer.Argument(..., metavar="JOB", help="Job id or name."),
    limit: int = typer.Option(20, help="How many, newest first."),
    tenant: str | None = TenantOption,
) -> None:
    """A job's run history (deleted jobs included)."""
    tenant_uuid = tenant_id(tenant)

    async def go() -> tuple[JobView, list[JobRunView], dict[uuid.UUID, RunApprovalView]]:
        from scheduler.job_reads import JobReader

        ads = JobReader(tenant_uuid)
        runs = await ads.runs(job_ref, limit=limit)
        approvals = await ads.run_approvals(r.id for r in runs)
        return await ads.history_job(job_ref), runs, approvals

    job, runs, approvals = run(go)
    _print_runs(job, runs, approvals)


def register(app: typer.Typer) -> None:
    """Mount `jobs …` and `runs` on the root command."""
    app.add_typer(jobs_app, name="jobs")
    app.command("runs")(runs_command)
