"""The two lock files agree, and the Dockerfile copies every code folder the flows import."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;\\]+)", re.MULTILINE)


def _pins(name: str) -> dict[str, str]:
    return {k.lower(): v for k, v in PIN.findall((ROOT / name).read_text())}


def test_runtime_lock_is_the_dev_lock_without_the_tools() -> None:
    runtime, dev = _pins("requirements.lock"), _pins("requirements-dev.lock")
    assert runtime and {k: dev.get(k) for k in runtime} == runtime
    assert {"pytest", "ruff", "mypy"} <= dev.keys() and not {"pytest", "ruff"} & runtime.keys()
    assert runtime["prefect"].startswith("3.9.")


def test_dockerfile_copies_every_package_and_installs_the_runtime_lock() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("config", "domain", "db", "blocks", "flows", "scheduler"):
        assert f"COPY {package} ./{package}" in dockerfile
    assert "--require-hashes -r requirements.lock" in dockerfile
    assert "WORKDIR /opt/prefect/ad-scheduler" in dockerfile
    assert "\nUSER app" in dockerfile
    # Bytecode compiled at build: nothing is written at run time (production/test_bytecode.py).
    assert "--compile-bytecode --require-hashes -r requirements.lock" in dockerfile
    assert "python -m compileall -q config domain db blocks flows scheduler" in dockerfile
