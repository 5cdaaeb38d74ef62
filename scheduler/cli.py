"""The `ad-scheduler` command line (typer): jobs, runs, the catalog and the database.

No traceback reaches a person: every error a command meets is printed as one short message
(what failed, which field or setting, what to do) and the exit status says whose it is —
**2** for bad input (an invalid spec, conflicting options, an unknown job, a name already taken,
an operation the job's state does not allow), **1** for a failure the command could not avoid
(Prefect or the database unreachable, an unexpected error). `ad-scheduler --debug …` (or
`AD_SCHEDULER_DEBUG=1`) also prints the traceback.

It answers at once: this module and the command modules import only typer, rich and the spec;
Prefect, SQLAlchemy and the ORM are imported by the command that uses them, when it runs.
The commands live in `scheduler/commands/` (one module per group, each with `register(app)`).
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback
from pathlib import Path
from typing import Any

import typer
from typer._click import ClickException  # typer 0.29 vendors click: its usage errors
from typer.core import TyperGroup

from db.errors import ConflictError, NotFoundError
from domain.errors import AdSchedulerError, InvalidJobSpec
from scheduler.commands.common import UsageProblem, console, err_console
from scheduler.errors import JobStateError, database_problem, redact_url

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2

#: Errors that mean "the input is wrong": fixing the command line or the file fixes them.
BAD_INPUT_ERRORS: tuple[type[BaseException], ...] = (
    UsageProblem,
    InvalidJobSpec,
    NotFoundError,
    ConflictError,
    JobStateError,
    json.JSONDecodeError,
    FileNotFoundError,
    IsADirectoryError,
)


def _loaded(module: str, name: str) -> tuple[type[BaseException], ...]:
    # An error class of a module nobody imported cannot have been raised: no need to import it.
    found = getattr(sys.modules.get(module), name, None)
    return (found,) if isinstance(found, type) else ()


def describe_error(exc: BaseException) -> tuple[int, str]:
    """The exit status and the one message a person sees for an error (never a secret)."""
    bad_input = (
        *BAD_INPUT_ERRORS,
        *_loaded("yaml", "YAMLError"),
    )
    if isinstance(exc, bad_input):
        if isinstance(exc, OSError):
            return EXIT_BAD_INPUT, f"{exc.strerror or type(exc).__name__}: {exc.filename}"
        return EXIT_BAD_INPUT, str(exc)
    if isinstance(exc, AdSchedulerError):
        return EXIT_FAILURE, str(exc)
    database_errors = (
        *_loaded("sqlalchemy.exc", "SQLAlchemyError"),
        ConnectionError,
        TimeoutError,
        *_loaded("socket", "gaierror"),
    )
    if isinstance(exc, database_errors):
        return EXIT_FAILURE, database_problem(exc)
    if isinstance(exc, _loaded("httpx", "HTTPError")):
        from scheduler.prefect_api import START_SERVER_HINT

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
                import asyncio

                from scheduler.prefect_api import probe_prefect_api

                asyncio.run(probe_prefect_api())
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, ClickException):
            raise  # typer's own: usage errors (exit 2), --help, confirmations
        except KeyboardInterrupt:
            err_console.print("interrupted", highlight=False)
            raise typer.Exit(130) from None
        except Exception as exc:
            code, message = describe_error(exc)
            if ctx.params.get("debug") or _debug_configured():
                traceback.print_exception(exc, file=sys.stderr)
            err_console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(code) from None


app = typer.Typer(
    cls=FriendlyGroup,
    help="Scheduled, unattended ad creation on Prefect.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _debug_configured() -> bool:
    """`AD_SCHEDULER_DEBUG` (through the settings); False when the settings cannot be read (the
    error being reported may be that very problem)."""
    from config import get_settings

    try:
        return get_settings().debug
    except ValueError:
        return False


@app.callback()
def main(
    debug: bool = typer.Option(
        False, "--debug", help="Print tracebacks of errors (or set AD_SCHEDULER_DEBUG=1)."
    ),
) -> None:
    """Scheduled, unattended ad creation on Prefect."""


#: Command modules in `scheduler/commands/`, mounted in this order when present. Each exposes
#: `register(app)` and keeps its top-level imports light (see the module docstring).
COMMAND_MODULES = ("db", "jobs", "catalog", "export", "approvals", "up", "worker")


def _mount_commands() -> None:
    folder = Path(__file__).parent / "commands"
    for name in COMMAND_MODULES:
        if (folder / f"{name}.py").exists():
            importlib.import_module(f"scheduler.commands.{name}").register(app)


_mount_commands()

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILURE", "UsageProblem", "app", "console", "describe_error"]


if __name__ == "__main__":
    app()
