"""A flow-run process starts from compiled bytecode, as `make setup` and the Dockerfile leave it.

Every scheduled run is a new interpreter. One that finds no up-to-date `.pyc` for a module
compiles it from source, and with `PYTHONDONTWRITEBYTECODE=1` (this machine, the Docker image)
it does so again in every run: ~2 s of CPU per run here, which a burst of runs pays in full.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from config import PROJECT_ROOT

# In a fresh process, as the engine loads the flow: every imported module with a source file,
# and whether its cached bytecode is there and matches the source (mtime and size, as the
# import system checks a timestamp-based .pyc).
_PROBE = """
import importlib.util, json, os, sys
import flows.scheduled_job
stale = []
for name, module in list(sys.modules.items()):
    spec = getattr(module, "__spec__", None)
    origin = getattr(spec, "origin", None) or ""
    if not origin.endswith(".py") or not getattr(spec, "cached", None):
        continue
    try:
        with open(spec.cached, "rb") as pyc:
            header = pyc.read(16)
    except OSError:
        stale.append(name)
        continue
    flags = int.from_bytes(header[4:8], "little")
    source = os.stat(origin)
    if flags == 0 and (
        int.from_bytes(header[8:12], "little") != int(source.st_mtime) & 0xFFFFFFFF
        or int.from_bytes(header[12:16], "little") != source.st_size & 0xFFFFFFFF
    ):
        stale.append(name)
print(json.dumps({"modules": len(sys.modules), "stale": sorted(stale)}))
"""


def test_the_flow_process_imports_nothing_it_must_compile() -> None:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["modules"] > 500
    assert report["stale"] == [], (
        f"compiled from source in every run: {report['stale'][:20]} (`make setup` compiles them)"
    )
