"""What a forked run imports as it goes is already imported by the fork server.

A fresh interpreter defers these until a run names them (tests/production/test_registry.py);
a child of the fork server would pay for them in every run instead of once in the server.
"""

from __future__ import annotations

import json
import subprocess
import sys

from config import PROJECT_ROOT

# Run in a fresh interpreter, as the server starts: nothing imported by the test session counts.
PROBE = """
import json, sys
from datetime import UTC, datetime
from scheduler.forkserver import PRELOAD, preload
preload(PRELOAD)
before = set(sys.modules)
from blocks.registry import block_class
import blocks.shipped
from domain.cron import next_fire_time
next_fire_time("0 9 * * 1", "Europe/Paris", after=datetime(2026, 11, 30, tzinfo=UTC))
for cls in (getattr(blocks.shipped, name) for name in blocks.shipped.__all__):
    block_class(cls.get_block_type_slug())
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_a_run_imports_nothing_the_server_did_not_preload() -> None:
    # The cron of a job's next run (every final state re-derives it) and every block class a
    # job can name: generators, storage, email and Slack exports.
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
