"""The Prefect servers we start: a pool sized for bursts on PostgreSQL, and Prefect's task-run
recorder and event persister writing in batches (`TUNED_SERVER_ENV`, docs/scaling.md)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from scheduler.local_prefect import (
    SERVER_POSTGRES_POOL_SIZE,
    TUNED_SERVER_ENV,
    prefect_env,
    server_env,
)

POOL = "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE"
URL = "PREFECT_SERVER_DATABASE_CONNECTION_URL"
RECORDER_BATCH = "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE"
POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/prefect"


@pytest.fixture(autouse=True)
def _no_operator_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (POOL, URL, *TUNED_SERVER_ENV):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.replace("_SERVER_SERVICES_", "_API_SERVICES_"), raising=False)


def test_a_postgres_server_gets_the_burst_pool_and_the_batched_services(tmp_path: Path) -> None:
    env = server_env(prefect_env(tmp_path, database_url=POSTGRES))
    assert env == {**TUNED_SERVER_ENV, POOL: str(SERVER_POSTGRES_POOL_SIZE)}


def test_a_postgres_server_named_by_the_environment_gets_the_pool_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # `ad-scheduler up` passes no URL: the server reads Prefect's own setting.
    monkeypatch.setenv(URL, "postgresql+asyncpg://postgres@127.0.0.1/p")
    assert server_env(prefect_env(tmp_path))[POOL] == str(SERVER_POSTGRES_POOL_SIZE)


def test_a_sqlite_server_gets_the_batched_services_and_no_pool(tmp_path: Path) -> None:
    assert server_env(prefect_env(tmp_path)) == TUNED_SERVER_ENV
    sqlite = prefect_env(tmp_path, database_url="sqlite+aiosqlite:///p.db")
    assert server_env(sqlite) == TUNED_SERVER_ENV


def test_an_operators_settings_win(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(POOL, "12")
    monkeypatch.setenv(RECORDER_BATCH, "1")
    env = server_env(prefect_env(tmp_path, database_url=POSTGRES))
    assert POOL not in env and RECORDER_BATCH not in env
    assert env == {k: v for k, v in TUNED_SERVER_ENV.items() if k != RECORDER_BATCH}


def test_prefects_older_names_for_the_settings_count_as_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PREFECT_API_SERVICES_EVENT_PERSISTER_BATCH_SIZE", "20")
    env = server_env(prefect_env(tmp_path))
    assert "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE" not in env
    assert env[RECORDER_BATCH] == TUNED_SERVER_ENV[RECORDER_BATCH]


def test_the_running_server_batches_task_run_states_and_events(prefect_api: str) -> None:
    """The session's server (started as `ad-scheduler up` starts one) runs with the settings:
    Prefect reports its own effective settings at `/admin/settings`."""
    services = httpx.get(f"{prefect_api}/admin/settings", timeout=30).json()["server"]["services"]
    assert services["task_run_recorder"]["batch_size"] == 100
    assert services["task_run_recorder"]["flush_interval"] == 1
    assert services["event_persister"]["batch_size"] == 200
    assert services["event_persister"]["flush_interval"] == 1
