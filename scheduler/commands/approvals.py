"""`ad-scheduler approvals list|show|decide`: runs waiting for a person's approval.

`decide RUN --approve ID… --reject ID… [--note …]` makes the same decision as the Prefect UI's
resume form: every ad of the run gets an explicit choice (`--approve-rest`/`--reject-rest`
decide the ads not named), then the run resumes and exports only the approved ads.
"""

from __future__ import annotations

import asyncio
import getpass
import uuid
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from config import get_settings
from scheduler.commands.common import TenantOption

if TYPE_CHECKING:  # imported on use: `ad-scheduler --help` must not load SQLAlchemy
    from scheduler import approvals as sdk

approvals_app = typer.Typer(help="Runs waiting for approval before export.", no_args_is_help=True)


def _tenant(tenant: str | None) -> uuid.UUID:
    from scheduler import approvals as sdk

    value = tenant or str(get_settings().tenant_id)
    try:
        return uuid.UUID(value)
    except ValueError:
        raise sdk.BadDecision(f"--tenant: {value!r} is not a UUID") from None


T = TypeVar("T")


def _run(coro: Awaitable[T]) -> T:
    from db.session import dispose_engines

    async def main() -> T:
        try:
            return await coro
        finally:
            await dispose_engines()

    return asyncio.run(main())


@approvals_app.command("list")
def list_command(
    tenant: str | None = TenantOption,
    all_: Annotated[bool, typer.Option("--all", help="Also decided approvals.")] = False,
) -> None:
    """List runs awaiting approval (soonest deadline first)."""
    from scheduler import approvals as sdk

    views: list[sdk.ApprovalView] = _run(sdk.list_pending(_tenant(tenant), include_decided=all_))
    if not views:
        typer.echo("no runs awaiting approval")
        return
    for v in views:
        typer.echo(
            f"{v.flow_run_id}  {v.job_name}  {v.status}  deadline "
            f"{v.deadline_at.isoformat(timespec='minutes')}  then {v.on_timeout}"
        )


@approvals_app.command("show")
def show_command(
    run: Annotated[str, typer.Argument(help="Flow run id (or job run id).")],
    tenant: str | None = TenantOption,
) -> None:
    """Show a run's ads (ids to decide with) and its decision, if made."""
    from scheduler import approvals as sdk

    v: sdk.ApprovalView = _run(sdk.show(_tenant(tenant), run))
    typer.echo(f"run {v.flow_run_id} of job {v.job_name}: {v.status}")
    typer.echo(f"deadline {v.deadline_at.isoformat(timespec='minutes')}, then {v.on_timeout}")
    approved, rejected = set(v.approved), set(v.rejected)
    for ad in v.ads:
        mark = "approved" if ad.id in approved else "rejected" if ad.id in rejected else "-"
        typer.echo(f"  {ad.id}  {mark:<8}  {ad.template}  {ad.headline}  ({ad.storage_path})")
    if v.decided_at:
        typer.echo(
            f"decided {v.decided_at.isoformat(timespec='seconds')} by {v.decided_by or '?'} "
            f"via {v.decided_via}" + (f": {v.note}" if v.note else "")
        )


@approvals_app.command("decide")
def decide_command(  # noqa: PLR0917 (one typer option per parameter)
    run: Annotated[str, typer.Argument(help="Flow run id (or job run id).")],
    approve: Annotated[list[str] | None, typer.Option("--approve", help="Ad id to export.")] = None,
    reject: Annotated[
        list[str] | None, typer.Option("--reject", help="Ad id not to export.")
    ] = None,
    approve_rest: Annotated[bool, typer.Option("--approve-rest")] = False,
    reject_rest: Annotated[bool, typer.Option("--reject-rest")] = False,
    note: Annotated[str, typer.Option("--note")] = "",
    by: Annotated[str | None, typer.Option("--by", help="Who decides (default: you).")] = None,
    tenant: str | None = TenantOption,
) -> None:
    """Approve or reject every ad of a waiting run; the run resumes and exports the approved."""
    from scheduler import approvals as sdk

    if approve_rest and reject_rest:
        raise sdk.BadDecision("--approve-rest/--reject-rest: choose one")
    tenant_id = _tenant(tenant)
    approved, rejected = list(approve or []), list(reject or [])
    if approve_rest or reject_rest:
        view: sdk.ApprovalView = _run(sdk.show(tenant_id, run))
        named = {s.strip() for s in approved + rejected}
        rest = [str(a.id) for a in view.ads if str(a.id) not in named]
        (approved if approve_rest else rejected).extend(rest)
    v: sdk.ApprovalView = _run(
        sdk.decide(
            tenant_id,
            run,
            approve=approved,
            reject=rejected,
            note=note,
            reviewer=by or getpass.getuser(),
        )
    )
    typer.echo(
        f"run {v.flow_run_id}: {v.status} ({len(v.approved)} approved, {len(v.rejected)} "
        "rejected); it resumes and exports the approved ads"
    )


def register(app: typer.Typer) -> None:
    """Mount `approvals` on the `ad-scheduler` app."""
    app.add_typer(approvals_app, name="approvals")
