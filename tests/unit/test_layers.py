"""The layer contract: `domain` <- `db` <- `blocks` <- `flows` <- `scheduler`, `config` below all.

The contracts live in pyproject.toml (`[tool.importlinter]`) and are checked by import-linter,
which sees every import, lazy ones inside functions included. `domain` is pure: the standard
library and pydantic only, plus Prefect in `domain/cron.py` (which validates with Prefect's own
scheduling code). `scheduler` (the SDK and CLI) writes no SQL: it does not import SQLAlchemy
itself, only the session type and driver errors through `db.driver`; its statements are in
`db/queries/`. Currently no exception is needed; one would be listed in pyproject.toml's
`ignore_imports`, named and commented.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
#: What `domain` may import besides the standard library; `prefect` only in `domain/cron.py`.
DOMAIN_ALLOWED = frozenset({"pydantic", "domain"})
DOMAIN_PREFECT_MODULES = frozenset({"cron.py"})


def _lint_imports(cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", "pyproject.toml", *extra],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_project_keeps_its_layer_contracts() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 4 kept, 0 broken." in result.stdout


def test_the_contracts_catch_upward_imports_io_in_domain_and_sql_in_the_sdk(tmp_path: Path) -> None:
    # The project's own contract section, over a miniature project that breaks three of them.
    config = (ROOT / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(config[config.index("[tool.importlinter]") :])
    for package in ("domain", "db", "blocks", "flows", "scheduler", "config"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "db" / "models.py").write_text(
        textwrap.dedent(
            """
            def lazy():
                from flows import pipeline  # upward, and hidden in a function
            """
        )
    )
    (tmp_path / "flows" / "pipeline.py").write_text("import domain\n")
    (tmp_path / "domain" / "spec.py").write_text("import json\nimport pydantic\n")
    (tmp_path / "domain" / "cron.py").write_text("import prefect\n")  # the allowed exception
    (tmp_path / "domain" / "rules.py").write_text("import sqlalchemy\n")  # I/O in domain
    (tmp_path / "db" / "driver.py").write_text("import sqlalchemy\n")
    (tmp_path / "scheduler" / "sdk.py").write_text("from db import driver\n")  # allowed
    (tmp_path / "scheduler" / "reads.py").write_text("import sqlalchemy as sa\n")  # SQL in SDK
    result = _lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "domain <- db <- blocks <- flows <- scheduler BROKEN" in result.stdout
    assert "db.models -> flows.pipeline" in result.stdout
    assert "domain uses no I/O library (Prefect only in domain.cron) BROKEN" in result.stdout
    assert "domain.rules -> sqlalchemy" in result.stdout
    assert "domain.cron -> prefect" not in result.stdout
    assert "config is below every layer KEPT" in result.stdout
    assert "scheduler writes no SQL (SQLAlchemy only through db.driver) BROKEN" in result.stdout
    assert "scheduler.reads -> sqlalchemy" in result.stdout
    assert "scheduler.sdk" not in result.stdout


def _top_level_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_domain_imports_only_the_standard_library_and_pydantic() -> None:
    allowed_everywhere = set(sys.stdlib_module_names) | DOMAIN_ALLOWED
    outside = {}
    for path in sorted((ROOT / "domain").rglob("*.py")):
        allowed = allowed_everywhere | (
            {"prefect"} if path.name in DOMAIN_PREFECT_MODULES else set()
        )
        extra = _top_level_imports(path) - allowed
        if extra:
            outside[path.name] = sorted(extra)
    assert outside == {}
