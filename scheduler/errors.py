"""The SDK's errors and how a failure is told without secrets (light: no Prefect, no ORM).

The CLI's error boundary imports this module on every command, so it must stay cheap to import.
"""

from __future__ import annotations

import re

from domain.errors import AdSchedulerError


class PrefectApiError(AdSchedulerError):
    """The Prefect API refused or could not be reached; nothing was changed."""


class DatabaseError(AdSchedulerError):
    """The application database could not be reached or refused the query; nothing changed."""


class StorageError(AdSchedulerError):
    """Template storage refused a write; nothing was changed."""


class JobStateError(AdSchedulerError):
    """The job is in a state that does not allow the operation (e.g. resuming a completed job)."""


def database_problem(exc: BaseException) -> str:
    """A one-line description of a database failure, without credentials."""
    orig = getattr(exc, "orig", None) or exc
    detail = (str(orig).strip().splitlines() or [""])[0][:200]
    hint = "check DATABASE_URL and that the database is running"
    if "does not exist" in detail or "no such table" in detail or "UndefinedTable" in repr(orig):
        hint = "run `ad-scheduler db upgrade` to create or migrate the schema"
    return redact_url(f"database error ({type(orig).__name__}: {detail}); {hint}")


def redact_url(text: str) -> str:
    """Text with any password in a URL (`scheme://user:secret@host`) replaced by ***."""
    return re.sub(r"(\w[\w+.-]*://[^:/@\s]+:)[^@\s]+@", r"\1***@", text)
