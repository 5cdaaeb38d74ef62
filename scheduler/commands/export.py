"""`ad-scheduler export <ad-run-or-job-run> --channel email|slack [--force]`: export a run.

Exports normally happen once, after each ad run. This command sends what was not sent yet (never
sent, or failed) and shows the rest as it stands: `already_sent` with the earlier send's id, and
`unconfirmed` — "sent, not recorded — check" — for a send that may have gone out but could not
be recorded. Nothing already sent (or possibly sent) goes out again unless `--force` is given;
`--force` first prints every delivery it will re-send (when it was sent, as what), then sends
them again and says so in the log.

The id may be an ad run (its email and/or Slack post) or a job run (`scheduled_job_runs.id` or
its Prefect flow run id: the digest email, or the Slack post of each of its ad runs). Where the
ads go comes from the job's export settings; `--to`, `--email-block` and `--slack-block`
override them (needed for manual ad runs, which have no job).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from scheduler.commands.common import TenantOption

if TYPE_CHECKING:
    # Imported where used: `ad-scheduler --help` must not pay for SQLAlchemy and the ORM.
    from db.read_models import AdRunView, DeliveryView, JobRunView, JobView
    from domain.params import ExportSettings

logger = logging.getLogger("ad_scheduler.export")


class ExportChannel(enum.StrEnum):
    """A channel to re-send to."""

    email = "email"
    slack = "slack"


class _Usage(Exception):
    """A problem with what was asked (printed, exit status 2)."""


async def _find_subject(
    run_id: uuid.UUID, tenant_id: uuid.UUID
) -> tuple[AdRunView | None, JobRunView | None, JobView | None]:
    from db.queries.export_subjects import find_export_subject
    from db.session import session_scope

    async with session_scope() as session:
        found = await find_export_subject(session, run_id, tenant_id)
    if found is None:
        raise _Usage(f"no ad run or job run {run_id} for tenant {tenant_id}")
    return found.ad_run, found.job_run, found.job


def _settings(
    job: JobView | None,
    channel: ExportChannel,
    *,
    digest: bool,
    to: list[str] | None,
    email_block: str | None,
    slack_block: str | None,
) -> ExportSettings:
    from pydantic import ValidationError

    from domain.params import ExportSettings, JobParameters

    base = (
        JobParameters.model_validate(job.parameters).export.model_dump()
        if job is not None
        else ExportSettings().model_dump()
    )
    base["destination"] = channel.value
    base["email_mode"] = "digest" if digest else "per_ad_run"
    if to:
        base["email_recipients"] = to
    if email_block:
        base["email_block"] = email_block
    if slack_block:
        base["slack_webhook_block"] = slack_block
    try:
        return ExportSettings.model_validate(base)
    except ValidationError as exc:
        problems = "; ".join(str(e["msg"]) for e in exc.errors())
        raise _Usage(f"cannot export to {channel.value}: {problems}") from None


Row = tuple[uuid.UUID, str, str, str]
Announce = Callable[[str], None]


async def _ad_runs_of(job_run: JobRunView) -> list[uuid.UUID]:
    from db.queries.ad_runs import completed_ad_runs_of
    from db.session import session_scope

    async with session_scope() as session:
        return [ad_run.id for ad_run in await completed_ad_runs_of(session, job_run.id)]


async def _already_out(
    channel: ExportChannel, *, ad_run_ids: list[uuid.UUID], job_run_id: uuid.UUID | None
) -> list[DeliveryView]:
    """Deliveries to `channel` of these subjects that went out (or may have)."""
    from db.queries.export_subjects import deliveries_out
    from db.session import session_scope

    async with session_scope() as session:
        return await deliveries_out(
            session, channel.value, ad_run_ids=ad_run_ids, job_run_id=job_run_id
        )


def _describe(delivery: DeliveryView) -> str:
    from db.queries.deliveries import UNCONFIRMED_LABEL

    subject = delivery.ad_run_id or delivery.scheduled_job_run_id
    if delivery.status == "unconfirmed":
        return f"{subject}  {delivery.channel}  {UNCONFIRMED_LABEL} (may have gone out)"
    when = delivery.sent_at.isoformat(timespec="seconds") if delivery.sent_at else "?"
    return f"{subject}  {delivery.channel}  sent at {when} as {delivery.provider_message_id}"


async def export_run(
    run_id: uuid.UUID,
    channel: ExportChannel,
    *,
    tenant_id: uuid.UUID,
    force: bool = False,
    to: list[str] | None = None,
    email_block: str | None = None,
    slack_block: str | None = None,
    announce: Announce | None = None,
) -> list[Row]:
    """Export one run to a channel; returns (run id, channel, status, detail) rows.

    Without `force`, only what was never sent or failed goes out; a delivery `sent` or
    `unconfirmed` is reported, not sent. With `force`, `announce` is first called with one line
    per delivery that will go out again, then everything is sent.

    Raises:
        _Usage: The run does not exist for the tenant, or the channel is not configured.
    """
    from flows.exports import export_stored_ad_run, export_stored_digest, open_exports

    ad_run, job_run, job = await _find_subject(run_id, tenant_id)
    digest = ad_run is None and channel is ExportChannel.email
    export = _settings(
        job, channel, digest=digest, to=to, email_block=email_block, slack_block=slack_block
    )
    if ad_run is not None:
        ad_run_ids = [ad_run.id]
    elif digest:
        ad_run_ids = []
    else:
        assert job_run is not None
        ad_run_ids = await _ad_runs_of(job_run)
    if force:
        again = await _already_out(
            channel, ad_run_ids=ad_run_ids, job_run_id=job_run.id if digest and job_run else None
        )
        for delivery in again:
            line = f"re-sending (--force): {_describe(delivery)}"
            logger.warning("Manual re-send: %s", line)
            if announce is not None:
                announce(line)
    rows: list[Row] = []
    async with open_exports(export) as blocks:
        if digest:
            assert job_run is not None
            for outcome in await export_stored_digest(
                job_run.id, export, force=force, blocks=blocks
            ):
                rows.append((job_run.id, outcome.channel, outcome.status, _detail(outcome)))
            return rows
        for ad_run_id in ad_run_ids:
            for outcome in await export_stored_ad_run(
                ad_run_id, export, force=force, blocks=blocks
            ):
                rows.append((ad_run_id, outcome.channel, outcome.status, _detail(outcome)))
    return rows


def _detail(outcome: object) -> str:
    from db.queries.deliveries import UNCONFIRMED_LABEL

    status = getattr(outcome, "status", None)
    error = getattr(outcome, "error", None)
    kind = getattr(outcome, "error_kind", None)
    provider_id = str(getattr(outcome, "provider_message_id", "") or "")
    if status == "already_sent":
        return f"{provider_id} (not sent again; --force re-sends it)".lstrip()
    if status == "unconfirmed":
        return f"{error or UNCONFIRMED_LABEL}"
    if error:
        return f"{kind}: {error}" if kind else str(error)
    return provider_id


def export_command(
    run_id: Annotated[str, typer.Argument(help="An ad run id, or a job run (or flow run) id.")],
    channel: Annotated[ExportChannel, typer.Option("--channel", "-c", help="Where to re-send.")],
    *,
    tenant: str | None = TenantOption,
    to: Annotated[
        list[str] | None, typer.Option("--to", help="Recipient (repeat); overrides the job's.")
    ] = None,
    email_block: Annotated[
        str | None, typer.Option("--email-block", help="Resend email block name.")
    ] = None,
    slack_block: Annotated[
        str | None, typer.Option("--slack-block", help="Slack webhook block name.")
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Also re-send what was already sent (or may have been); lists it first.",
        ),
    ] = False,
) -> None:
    """Export a run's ads to a channel: what was not sent yet, or everything with --force."""
    from config import get_settings
    from db.session import dispose_engines

    try:
        subject = uuid.UUID(run_id)
        tenant_id = uuid.UUID(tenant or get_settings().tenant_id)
    except ValueError:
        typer.echo("error: the run id and the tenant must be UUIDs", err=True)
        raise typer.Exit(2) from None

    async def main() -> list[Row]:
        try:
            return await export_run(
                subject,
                channel,
                tenant_id=tenant_id,
                force=force,
                to=to,
                email_block=email_block,
                slack_block=slack_block,
                announce=typer.echo,
            )
        finally:
            await dispose_engines()

    try:
        rows = asyncio.run(main())
    except _Usage as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if not rows:
        typer.echo("nothing to export")
    for run, sent_channel, status, detail in rows:
        typer.echo(f"{run}  {sent_channel}  {status}  {detail}".rstrip())
    if any(status == "failed" for _run, _channel, status, _detail in rows):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Mount `export` on the `ad-scheduler` app."""
    app.command("export")(export_command)
