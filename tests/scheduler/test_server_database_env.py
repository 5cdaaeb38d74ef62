"""A PostgreSQL-backed Prefect server we start gets a pool sized for bursts (docs/scaling.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.local_prefect import SERVER_POSTGRES_POOL_SIZE, prefect_env, server_database_env

SETTING = "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE"
URL = "PREFECT_SERVER_DATABASE_CONNECTION_URL"
POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/prefect"


def test_a_postgres_server_gets_the_burst_pool(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(SETTING, raising=False)
    env = server_database_env(prefect_env(tmp_path, database_url=POSTGRES))
    assert env == {SETTING: str(SERVER_POSTGRES_POOL_SIZE)}


def test_a_postgres_server_named_by_the_environment_gets_it_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # `ad-scheduler up` passes no URL: the server reads Prefect's own setting.
    monkeypatch.delenv(SETTING, raising=False)
    monkeypatch.setenv(URL, "postgresql+asyncpg://postgres@127.0.0.1/p")
    assert server_database_env(prefect_env(tmp_path)) == {SETTING: str(SERVER_POSTGRES_POOL_SIZE)}


def test_sqlite_and_an_explicit_setting_are_left_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(SETTING, raising=False)
    monkeypatch.delenv(URL, raising=False)
    assert server_database_env(prefect_env(tmp_path)) == {}
    assert server_database_env(prefect_env(tmp_path, database_url="sqlite+aiosqlite:///p.db")) == {}
    monkeypatch.setenv(SETTING, "12")
    assert server_database_env(prefect_env(tmp_path, database_url=POSTGRES)) == {}
