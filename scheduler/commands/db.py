"""`ad-scheduler db upgrade`: create, migrate or adopt the application database."""

from __future__ import annotations

from typing import Any

import typer

from scheduler.commands.common import TenantOption, run, tenant_id

db_app = typer.Typer(help="The application database.", no_args_is_help=True)


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
    tenant_uuid = tenant_id(tenant)

    async def go() -> Any:
        from db.migrate import aupgrade

        return await aupgrade(revision=revision, tenant_id=tenant_uuid, dry_run=dry_run)

    result = run(go)
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


def demo() -> None:
    """Run the scheduled demo end to end on this machine (no services needed)."""
    from scheduler.demo import run_demo

    run_demo()


def register(app: typer.Typer) -> None:
    """Mount `db …` and `demo` on the root command."""
    app.add_typer(db_app, name="db")
    app.command("demo")(demo)
