"""The undo protocol: compensations for Prefect-side changes when a later step fails."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


@dataclass
class Undo:
    """Compensations for Prefect-side changes, run (last first) when a later step fails."""

    steps: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def add(self, step: Callable[[], Awaitable[None]]) -> None:
        """Register how to undo the change just made."""
        self.steps.append(step)

    async def run(self) -> None:
        """Run every compensation, last first; one that fails is logged and the rest still run."""
        for step in reversed(self.steps):
            try:
                await step()
            except Exception:  # the original error matters more; log and keep undoing
                logger.exception("could not undo a Prefect change after a failed job write")
