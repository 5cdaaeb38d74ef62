"""What a benchmark reports about the machine it ran on, beside its figures.

The machine is shared and not always the same one: ratios are measured against a baseline in
the same run, but a figure in seconds (a run's duration, the CPU of a burst) only compares with
another session's when the CPUs ran as fast. `cpu_reference_s` is that yardstick.
"""

from __future__ import annotations

import time
from pathlib import Path

#: Iterations of the reference loop (~0.26 s of one core on the machine of 2026-12-02).
REFERENCE_LOOP = 5_000_000


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages ("0.52 0.80 1.15")."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_reference_s(rounds: int = 3) -> float:
    """Seconds of one core for a fixed pure-Python loop, the best of `rounds` (the least
    disturbed by other work): the speed of this machine's CPU for the interpreter."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        total = 0
        for i in range(REFERENCE_LOOP):
            total += i
        best = min(best, time.perf_counter() - start)
    return round(best, 3)
