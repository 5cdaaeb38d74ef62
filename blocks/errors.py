"""Errors the export blocks raise: one shape for every channel, never carrying a secret."""

from __future__ import annotations

from domain.vocab import ErrorKind


class DeliveryError(Exception):
    """A send the provider (or the network) refused; never carries an API key or webhook URL.

    Attributes:
        kind: `retryable` when trying again later can help, else `permanent`.
        status: The HTTP status (0 or 500 when the provider could not be reached).
        error_type: The provider's error name (`rate_limit_exceeded`, `no_service`, …).
        retry_after: Seconds the provider asked to wait, when it said.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: ErrorKind,
        status: int,
        error_type: str,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind: ErrorKind = kind
        self.status = status
        self.error_type = error_type
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """True when a later attempt can succeed."""
        return self.kind == "retryable"
