"""What every command shares: the consoles, the tenant option, running a coroutine, the usage
error, and the stop signal of the long-running commands. Light on purpose (typer and rich only):
`ad-scheduler --help` imports it."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import threading
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from types import FrameType
from typing import TypeVar
from zoneinfo import ZoneInfo

import typer
from rich.console import Console

from domain.errors import AdSchedulerError

T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)

TenantOption = typer.Option(
    None, "--tenant", help="Tenant id (default: AD_SCHEDULER_TENANT_ID, via the settings)."
)

#: Database attempts for a CLI command: a person waiting at a prompt is told at once that the
#: database is unreachable (flows ride out ~25 s of outage; `AD_SCHEDULER_DB_RETRY_ATTEMPTS`
#: set explicitly wins here too).
CLI_DB_ATTEMPTS = 2


class UsageProblem(AdSchedulerError):
    """What the person asked for is contradictory or malformed (exit status 2)."""


def run(call: Callable[[], Awaitable[T]]) -> T:
    """Run one command's coroutine with the CLI's database retry budget; engines disposed."""
    from db import session as db_session

    async def main() -> T:
        try:
            return await call()
        finally:
            await db_session.dispose_engines()

    from config import get_settings

    previous = db_session.DB_RETRY
    if not get_settings().db_retry_attempts_configured and previous.attempts is None:
        db_session.DB_RETRY = dataclasses.replace(previous, attempts=CLI_DB_ATTEMPTS)
    try:
        return asyncio.run(main())
    finally:
        db_session.DB_RETRY = previous


def tenant_id(tenant: str | None) -> uuid.UUID:
    """The `--tenant` option (or the configured tenant) as a UUID; `UsageProblem` otherwise."""
    if tenant:
        return parse_uuid(tenant, "--tenant")
    from config import get_settings

    return parse_uuid(get_settings().tenant_id, "--tenant")


def parse_uuid(raw: str, option: str) -> uuid.UUID:
    """`raw` as a UUID, or a `UsageProblem` naming `option`."""
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        raise UsageProblem(
            f"{option}: {raw!r} is not a UUID; allowed: an id like "
            "3f2b8c1e-0000-4000-8000-000000000000"
        ) from None


def when(value: datetime | None, timezone: str) -> str:
    """A moment in a time zone, to the minute; "—" for none."""
    if value is None:
        return "—"
    return value.astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M %Z")


class StopSignal:
    """A signal handler for the long-running commands (`up`, `worker`): SIGINT or SIGTERM sets
    `event` (and names itself in `signal_name`); the command's loop then stops its children."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal_name = ""

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.signal_name = signal.Signals(signum).name
        self.event.set()
