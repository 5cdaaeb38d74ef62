"""Approval before export: the job option and the rules of a decision (pure, no I/O).

A job with `approval.enabled` makes its ads, records them and their template usage, then waits
for a person to approve or reject each ad; only approved ads are exported. `timeout` bounds the
wait (`30m`, `24h`, `2d`; 5 minutes .. 14 days); when it passes, `on_timeout` applies:
`discard` (nothing is exported, the ads stay stored and are recorded as rejected) or `export`
(every ad is exported as if approved). Either way the outcome is recorded with the run.

A decision names every ad of the run exactly once (approve or reject: there is no implicit
"all approved"), plus an optional note. `check_decision` refuses ids of another run, an ad
named twice, ads left undecided and an empty decision, naming the field and what is allowed.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

OnTimeout = Literal["discard", "export"]
Choice = Literal["approve", "reject"]
#: Outcomes recorded with a run's approval ("awaiting" until a decision or the timeout).
APPROVAL_STATUSES = ("awaiting", "approved", "rejected", "partial", "timed_out")
#: Who settled an approval: the Prefect UI's resume form, the SDK/CLI, the timeout, or the run
#: ending undecided (cancelled by a person).
DECIDED_VIA = ("ui", "sdk", "timeout", "run_ended")

MIN_TIMEOUT_SECONDS = 5 * 60
MAX_TIMEOUT_SECONDS = 14 * 24 * 3600
DEFAULT_TIMEOUT = "24h"
MAX_NOTE_LENGTH = 2000
MAX_REVIEWER_LENGTH = 200
TIMEOUT_ALLOWED = "a duration like 30m, 24h or 2d (or seconds), from 5m to 14d"

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")


def parse_timeout(value: str | int) -> int:
    """A timeout (`"24h"`, `"90m"`, `"2d"`, `"3600"` or an int of seconds) in seconds.

    Raises:
        ValueError: not a duration, or outside 5 minutes .. 14 days (says what is allowed).
    """
    if isinstance(value, bool):
        raise ValueError(f"not a duration; allowed: {TIMEOUT_ALLOWED}")
    if isinstance(value, int):
        seconds = value
    else:
        match = _DURATION.match(str(value).lower())
        if not match:
            raise ValueError(f"{str(value)[:40]!r} is not a duration; allowed: {TIMEOUT_ALLOWED}")
        seconds = int(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not MIN_TIMEOUT_SECONDS <= seconds <= MAX_TIMEOUT_SECONDS:
        raise ValueError(f"{format_duration(seconds)} is out of range; allowed: {TIMEOUT_ALLOWED}")
    return seconds


def format_duration(seconds: int) -> str:
    """Seconds as the shortest exact duration text (`86400` → `"1d"`, `5400` → `"90m"`)."""
    for unit in ("d", "h", "m"):
        if seconds and seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


class ApprovalSettings(BaseModel):
    """The job option `approval`.

    Attributes:
        enabled: Wait for a person's decision before exporting (off by default).
        timeout: How long to wait: `30m`, `24h`, `2d` or seconds; 5 minutes .. 14 days. Stored
            normalised (`"24h"` → `"1d"`).
        on_timeout: What happens when nobody decided in time: `discard` (export nothing; the ads
            stay stored, recorded as rejected) or `export` (export every ad).
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        default=False, description="Hold the ads for a person's approval before any export."
    )
    timeout: str = Field(
        default=DEFAULT_TIMEOUT,
        validate_default=True,  # the default is stored normalised too ("24h" → "1d")
        description="How long to wait for a decision, e.g. '24h'.",
    )
    on_timeout: OnTimeout = Field(
        default="discard", description="'discard' (export nothing) or 'export' (export all)."
    )

    @field_validator("timeout", mode="before")
    @classmethod
    def _valid_timeout(cls, value: object) -> str:
        if not isinstance(value, str | int):
            raise ValueError(f"not a duration; allowed: {TIMEOUT_ALLOWED}")
        return format_duration(parse_timeout(value))

    @property
    def timeout_seconds(self) -> int:
        """The timeout in seconds."""
        return parse_timeout(self.timeout)


class Decision(BaseModel):
    """A checked decision about every ad of one run.

    Attributes:
        approved: Ids (`generated_ads.id`) of the ads to export.
        rejected: Ids of the ads not to export (kept in storage, recorded as rejected).
        note: Free text kept with the run (at most 2000 characters).
        reviewer: Who decided, as given (free text; the Prefect UI has no user in OSS).
    """

    model_config = ConfigDict(frozen=True)

    approved: tuple[uuid.UUID, ...]
    rejected: tuple[uuid.UUID, ...]
    note: str = Field(default="", max_length=MAX_NOTE_LENGTH)
    reviewer: str = Field(default="", max_length=MAX_REVIEWER_LENGTH)

    @property
    def status(self) -> str:
        """`approved` (all), `rejected` (all) or `partial`."""
        if not self.rejected:
            return "approved"
        if not self.approved:
            return "rejected"
        return "partial"


class InvalidDecision(ValueError):
    """A decision that cannot apply to the run; the message names the field and what is allowed.

    Attributes:
        field: `approve`, `reject`, `note` or `decision`.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


def check_decision(
    run_ads: Iterable[uuid.UUID],
    approve: Iterable[uuid.UUID | str],
    reject: Iterable[uuid.UUID | str],
    *,
    note: str = "",
    reviewer: str = "",
) -> Decision:
    """Check a decision against the ads of the run it is for; returns it.

    Args:
        run_ads: Ids of every ad the run made (what is awaiting a decision).
        approve: Ids to approve (UUIDs or their text).
        reject: Ids to reject.
        note: Optional note.
        reviewer: Optional name of who decided.

    Raises:
        InvalidDecision: an empty decision, an id that is not a UUID or not an ad of this run,
            an ad both approved and rejected, ads left undecided, a note over 2000 characters.
    """
    ads = list(dict.fromkeys(run_ads))
    known = set(ads)
    approved = _ids("approve", approve)
    rejected = _ids("reject", reject)
    if not approved and not rejected:
        raise InvalidDecision(
            "decision", "empty; allowed: approve or reject each ad of the run (by its id)"
        )
    for field, ids in (("approve", approved), ("reject", rejected)):
        foreign = [str(i) for i in ids if i not in known]
        if foreign:
            raise InvalidDecision(
                field, f"not an ad of this run: {', '.join(foreign)}; allowed: this run's ad ids"
            )
    both = [str(i) for i in approved if i in set(rejected)]
    if both:
        raise InvalidDecision("reject", f"also approved: {', '.join(both)}; choose one per ad")
    undecided = [str(i) for i in ads if i not in set(approved) | set(rejected)]
    if undecided:
        raise InvalidDecision(
            "decision",
            f"{len(undecided)} ads undecided ({', '.join(undecided)}); allowed: an explicit "
            "approve or reject for every ad",
        )
    if len(note) > MAX_NOTE_LENGTH:
        raise InvalidDecision("note", f"{len(note)} characters; allowed: at most {MAX_NOTE_LENGTH}")
    return Decision(
        approved=tuple(approved),
        rejected=tuple(rejected),
        note=note,
        reviewer=reviewer[:MAX_REVIEWER_LENGTH],
    )


def timeout_decision(run_ads: Iterable[uuid.UUID], on_timeout: OnTimeout, waited: str) -> Decision:
    """The decision the timeout makes: every ad approved (`export`) or rejected (`discard`)."""
    ads = tuple(dict.fromkeys(run_ads))
    note = f"no decision within {waited}: on_timeout={on_timeout}"
    if on_timeout == "export":
        return Decision(approved=ads, rejected=(), note=note, reviewer="timeout")
    return Decision(approved=(), rejected=ads, note=note, reviewer="timeout")


def _ids(field: str, values: Iterable[uuid.UUID | str]) -> list[uuid.UUID]:
    out: list[uuid.UUID] = []
    for value in values:
        if isinstance(value, uuid.UUID):
            out.append(value)
            continue
        try:
            out.append(uuid.UUID(str(value).strip()))
        except ValueError:
            raise InvalidDecision(
                field, f"{str(value)[:60]!r} is not an ad id; allowed: a UUID from `approvals show`"
            ) from None
    return list(dict.fromkeys(out))
