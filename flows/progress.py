"""The run's progress artifact: ad runs finished, of the run's templates.

Shown only for a run of two templates or more (one template's bar could only go from 0 to 100 %
as the run ends: its Running state says as much) still at work after `PROGRESS_DELAY_S` (a quicker
one shows its result, the table of ads), and updated at most once per `PROGRESS_INTERVAL_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

from prefect import get_run_logger
from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact

#: Least time between two updates of a run's progress artifact, in seconds.
PROGRESS_INTERVAL_S = 1.0
#: How long a run works before it shows a progress artifact, in seconds (a quicker run has none).
PROGRESS_DELAY_S = 2.0


class ProgressReporter:
    """The run's progress artifact, updated in the background with the latest count.

    Updates are coalesced: at most one API call is in flight and at most one is sent per
    `PROGRESS_INTERVAL_S`, each with the latest count, so a run of 200 templates makes a handful
    of calls, never one per template, and the run's end seldom waits behind an update in flight.
    `close()` sends the final count at once (after any update in flight: they land in order).

    The artifact is created only once the run has been at work for `delay` seconds (default
    `PROGRESS_DELAY_S`, read when the reporter is made): a run that ends sooner shows its result
    (the run's ads table) and no progress bar, and spends no API call on one while its first
    requests and its last records contend for the server.

    A run of one template has none: its bar could only jump from 0 to 100 % as it ends, which the
    run's state already shows; in a burst of one-template jobs it was an artifact and an update
    (two API calls, their events) for every run slowed past the delay by the others.
    """

    def __init__(
        self,
        total: int,
        *,
        interval: float = PROGRESS_INTERVAL_S,
        delay: float | None = None,
    ) -> None:
        self._total = max(total, 1)
        self._interval = interval
        self._delay = PROGRESS_DELAY_S if delay is None else delay
        self._latest = 0
        self._sent = -1
        #: API calls made (the artifact's creation included), and the artifact once created.
        self.calls = 0
        self.artifact_id: uuid.UUID | None = None
        self._changed = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Future[None] | None = (
            asyncio.ensure_future(self._run()) if total > 1 else None
        )

    def update(self, finished: int) -> None:
        """Record that `finished` ad runs are done."""
        self._latest = finished
        self._changed.set()

    async def _run(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), self._delay)
            return  # closed within the delay: no progress bar to show
        self._sent = self._latest
        artifact = await acreate_progress_artifact(
            progress=100.0 * self._sent / self._total,
            description=f"Ad runs finished, of {self._total} templates",
        )
        self.calls += 1
        self.artifact_id = artifact
        sent_at = time.monotonic()
        while self._sent < self._total:
            await self._changed.wait()
            wait = sent_at + self._interval - time.monotonic()
            if wait > 0 and not self._closing.is_set():
                # Newer counts replace this one meanwhile; close() cuts the wait short.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), wait)
            self._changed.clear()
            if self._latest != self._sent:
                self._sent = self._latest
                sent_at = time.monotonic()
                await aupdate_progress_artifact(artifact, progress=100.0 * self._sent / self._total)
                self.calls += 1

    def cancel(self) -> None:
        """Stop reporting (the run is failing for another reason)."""
        if self._task is not None:
            self._task.cancel()

    async def close(self) -> None:
        """Wait until the final count is shown."""
        self.update(self._total)
        self._closing.set()
        if self._task is None:
            return
        try:
            await self._task
        except Exception as exc:  # progress is cosmetic: never fail a run over it
            get_run_logger().warning("progress artifact: %s", type(exc).__name__)
