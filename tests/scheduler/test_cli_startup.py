"""The CLI answers at once (issue 15 item 5): `--help`, input errors and the read-only commands
load neither Prefect nor (for help and input errors) SQLAlchemy. Checked by what a fresh
interpreter imports, not by timing (benchmarks measure time; see the report's figures)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
from typer.testing import CliRunner
from scheduler.cli import app
result = CliRunner().invoke(app, sys.argv[1:])
loaded = lambda name: any(m == name or m.startswith(name + ".") for m in sys.modules)
print(json.dumps({"code": result.exit_code, "output": result.output,
                  "prefect": loaded("prefect"), "sqlalchemy": loaded("sqlalchemy")}))
"""


def _probe(*args: str, code: str = PROBE) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_help_loads_neither_prefect_nor_sqlalchemy() -> None:
    for args in (["--help"], ["jobs", "create", "--help"], ["products", "--help"]):
        seen = _probe(*args)
        assert seen["code"] == 0, seen
        assert (seen["prefect"], seen["sqlalchemy"]) == (False, False), args


def test_an_input_error_answers_before_importing_prefect_or_sqlalchemy() -> None:
    seen = _probe("jobs", "create", "--name", "x")
    assert seen["code"] == 2 and "missing --product" in str(seen["output"])
    assert (seen["prefect"], seen["sqlalchemy"]) == (False, False)
    bad_choice = _probe("jobs", "create", "--name", "x", "--overlap", "never")
    assert bad_choice["code"] == 2 and "skip" in str(bad_choice["output"])
    assert bad_choice["prefect"] is False


def test_read_only_commands_use_a_reader_without_prefect() -> None:
    code = (
        "import json, sys\n"
        "import scheduler.commands.jobs, scheduler.job_reads, scheduler.catalog\n"
        "print(json.dumps({'prefect': any(m.startswith('prefect') for m in sys.modules)}))\n"
    )
    assert _probe(code=code) == {"prefect": False}
