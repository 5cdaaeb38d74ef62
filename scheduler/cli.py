"""The `ad-scheduler` command line (typer)."""

from __future__ import annotations

import asyncio

import typer

from db.migrate import aupgrade
from db.session import dispose_engines

app = typer.Typer(help="Scheduled, unattended ad creation on Prefect.", no_args_is_help=True)
db_app = typer.Typer(help="The application database.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Create or migrate the application database to the latest schema."""

    async def _run() -> str:
        url = await aupgrade(revision=revision)
        await dispose_engines()
        return url.render_as_string(hide_password=True)

    url = asyncio.run(_run())
    typer.echo(f"database migrated to {revision}: {url}")


@app.command("demo")
def demo() -> None:
    """Run the embedded demo (until the scheduled demo lands: migrate the embedded database)."""
    db_upgrade("head")


if __name__ == "__main__":
    app()
