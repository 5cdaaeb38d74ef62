"""The project's error base and the error for invalid input (a job spec or a value it names).

Every error raised on purpose derives from `AdSchedulerError`, so the CLI can print its message
(no traceback unless `--debug`). `InvalidJobSpec` lists one `FieldProblem` per invalid field:
the field's dotted path and what is allowed. Messages never echo input values that may be
secrets (a webhook URL).
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ValidationError

from domain.vocab import SCHEDULE_TYPES, TEMPLATE_MODES

#: pydantic puts a tagged union's tag (and function validators' names) in an error's `loc`; they
#: are not field names a person wrote, so they are left out of the dotted path.
UNION_TAGS = frozenset((*SCHEDULE_TYPES, *TEMPLATE_MODES))


class AdSchedulerError(Exception):
    """Base class for every error this project raises on purpose."""


class FieldProblem(BaseModel):
    """One invalid field: its dotted path (`schedule.cron`) and what is allowed."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class InvalidJobSpec(AdSchedulerError):
    """The job spec (or a value it refers to) is invalid; nothing was written.

    Attributes:
        problems: One `FieldProblem` per invalid field, in the order found.
    """

    def __init__(self, problems: list[FieldProblem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid job spec:\n{lines}")

    @classmethod
    def one(cls, field: str, message: str) -> InvalidJobSpec:
        """An error about one field."""
        return cls([FieldProblem(field=field, message=message)])

    @classmethod
    def from_validation_error(cls, exc: ValidationError) -> InvalidJobSpec:
        """Turn pydantic's errors into field problems (no input values echoed: they may be
        secrets such as a webhook URL)."""
        problems = []
        for err in exc.errors(include_url=False, include_input=False):
            path = ".".join(str(part) for part in err["loc"] if not _is_union_tag(part))
            message = err["msg"].removeprefix("Value error, ")
            named = re.match(r"^([a-z_][a-z_.]*): (.+)$", message, re.DOTALL)
            if named and (not path or named.group(1).startswith(f"{path}.")):
                path, message = named.group(1), named.group(2)
            if "email address" in message:
                message += " Allowed: an address like name@example.com."
            problems.append(FieldProblem(field=path or "spec", message=message))
        return cls(problems)

    @property
    def fields(self) -> list[str]:
        """The dotted paths of the invalid fields."""
        return [p.field for p in self.problems]


def _is_union_tag(part: object) -> bool:
    return part in UNION_TAGS or (isinstance(part, str) and part.startswith("function-"))
