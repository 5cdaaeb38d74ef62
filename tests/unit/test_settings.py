"""Settings: every `AD_SCHEDULER_*` variable is read through `config.settings`, nowhere else."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from config.settings import DEFAULT_BASE_DEPLOYMENT, DEFAULT_WORK_POOL, Settings
from scheduler.pull_steps import code_directory

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("domain", "db", "blocks", "flows", "scheduler", "config")


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env file from the checkout
    for name in ("BASE_DEPLOYMENT", "WORK_POOL", "CODE_DIR", "DB_RETRY_ATTEMPTS"):
        monkeypatch.delenv(f"AD_SCHEDULER_{name}", raising=False)
    settings = Settings()
    assert (settings.base_deployment, settings.work_pool) == (
        DEFAULT_BASE_DEPLOYMENT,
        DEFAULT_WORK_POOL,
    )
    assert settings.code_dir == "" and not settings.db_retry_attempts_configured

    monkeypatch.setenv("AD_SCHEDULER_BASE_DEPLOYMENT", "prod")
    monkeypatch.setenv("AD_SCHEDULER_WORK_POOL", "k8s")
    monkeypatch.setenv("AD_SCHEDULER_DB_RETRY_ATTEMPTS", "7")
    settings = Settings()
    assert (settings.base_deployment, settings.work_pool) == ("prod", "k8s")
    # Set to its default value is still "set": the CLI then keeps it instead of its own 2.
    assert settings.db_retry_attempts == 7 and settings.db_retry_attempts_configured


def test_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AD_SCHEDULER_DB_RETRY_ATTEMPTS", "0")
    with pytest.raises(ValueError, match="AD_SCHEDULER_DB_RETRY_ATTEMPTS"):
        Settings()


def test_the_pull_step_reads_the_worker_environment_each_time(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AD_SCHEDULER_CODE_DIR", str(tmp_path))
    assert code_directory() == tmp_path
    monkeypatch.delenv("AD_SCHEDULER_CODE_DIR")
    assert code_directory() == ROOT


def test_cli_fallbacks_are_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("DEBUG", "SLACK_WEBHOOK_URL"):
        monkeypatch.delenv(f"AD_SCHEDULER_{name}", raising=False)
    settings = Settings()
    assert settings.debug is False and settings.slack_webhook_url is None
    url = "https://hooks.slack.com/services/T000/B000/secret123"
    monkeypatch.setenv("AD_SCHEDULER_DEBUG", "1")
    monkeypatch.setenv("AD_SCHEDULER_SLACK_WEBHOOK_URL", url)
    settings = Settings()
    assert settings.debug is True
    assert settings.slack_webhook_url is not None
    assert settings.slack_webhook_url.get_secret_value() == url
    assert "secret123" not in repr(settings) and "secret123" not in str(settings)


def _environment_reads(path: Path) -> list[str]:
    """Reads of one environment variable (`os.environ[k]`, `os.environ.get(k)`, `os.getenv(k)`,
    `k in os.environ`) whose key is an `AD_SCHEDULER_*` literal or not a literal at all (a
    constant may hide the name), as `file:line`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        key: ast.expr | None = None
        if isinstance(node, ast.Call) and ast.unparse(node.func) in ("os.environ.get", "os.getenv"):
            key = node.args[0] if node.args else None
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Load)
            and ast.unparse(node.value) == "os.environ"
        ):
            key = node.slice
        elif isinstance(node, ast.Compare) and any(
            ast.unparse(c) == "os.environ" for c in node.comparators
        ):
            key = node.left
        else:
            continue
        named = key.value if isinstance(key, ast.Constant) else None
        if not isinstance(named, str) or named.startswith("AD_SCHEDULER_"):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def _cli_environment_reads(path: Path) -> list[str]:
    """CLI options that read a variable themselves (typer's `envvar=`), as `file:line`: the
    option falls back to the settings instead."""
    return [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Call) and any(k.arg == "envvar" for k in node.keywords)
    ]


#: The one module that reads an `AD_SCHEDULER_*` variable itself, and why: the process pools'
#: command runs in every flow-run process and imports the standard library only (importing
#: pydantic for the settings would cost each run ~0.2 s). Its variable is still a field.
STDLIB_ONLY_READERS = {"scheduler/forkserver_client.py": "AD_SCHEDULER_FORKSERVER"}


def test_no_module_reads_an_ad_scheduler_variable_itself() -> None:
    reads = [
        hit
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if path.name != "settings.py" and str(path.relative_to(ROOT)) not in STDLIB_ONLY_READERS
        for hit in (*_environment_reads(path), *_cli_environment_reads(path))
    ]
    assert reads == []


def test_the_stdlib_only_reader_reads_a_settings_field() -> None:
    """The pool's command reads the variable `Settings.forkserver` declares, by its literal
    name, and imports nothing of ours (so a run without a fork server pays only its start)."""
    from config.settings import FORKSERVER_ENV, Settings

    assert STDLIB_ONLY_READERS == {"scheduler/forkserver_client.py": FORKSERVER_ENV}
    assert Settings.model_fields["forkserver"].validation_alias == FORKSERVER_ENV
    source = (ROOT / "scheduler/forkserver_client.py").read_text()
    assert f'os.environ.get("{FORKSERVER_ENV}"' in source
    tree = ast.parse(source)
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    }
    assert imported <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)
