"""The data layer's own errors: clear messages instead of raw driver tracebacks.

Each derives from the project's error base, `domain.errors.AdSchedulerError`.
"""

from __future__ import annotations

from domain.errors import AdSchedulerError


class NotFoundError(AdSchedulerError):
    """A row does not exist, or belongs to another tenant (which is the same to the caller)."""

    def __init__(self, entity: str, key: object) -> None:
        super().__init__(f"{entity} {key} not found")
        self.entity = entity
        self.key = key


class ConflictError(AdSchedulerError):
    """A write would break a uniqueness rule (e.g. a duplicate template storage name)."""

    def __init__(self, entity: str, field: str, value: object) -> None:
        super().__init__(f"{entity} with {field}={value!r} already exists")
        self.entity = entity
        self.field = field
        self.value = value


class TemplatesExhaustedError(AdSchedulerError):
    """`unused` mode found no unused template and the job's policy is `fail`."""
