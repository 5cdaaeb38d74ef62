"""A PostgreSQL-backed Prefect server we start gets a pool sized for bursts (docs/scaling.md)."""

from __future__ import annotations

import pytest

from scheduler.local_prefect import SERVER_POSTGRES_POOL_SIZE, server_database_env

SETTING = "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE"


def test_a_postgres_server_gets_the_burst_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SETTING, raising=False)
    env = server_database_env("postgresql+asyncpg://postgres@127.0.0.1:5432/prefect")
    assert env == {SETTING: str(SERVER_POSTGRES_POOL_SIZE)}


def test_a_postgres_server_named_by_the_environment_gets_it_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `ad-scheduler up` passes no URL: the server reads Prefect's own setting.
    monkeypatch.delenv(SETTING, raising=False)
    monkeypatch.setenv(
        "PREFECT_SERVER_DATABASE_CONNECTION_URL", "postgresql+asyncpg://postgres@127.0.0.1/p"
    )
    assert server_database_env(None) == {SETTING: str(SERVER_POSTGRES_POOL_SIZE)}


def test_sqlite_and_an_explicit_setting_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SETTING, raising=False)
    monkeypatch.delenv("PREFECT_SERVER_DATABASE_CONNECTION_URL", raising=False)
    assert server_database_env(None) == {}
    assert server_database_env("sqlite+aiosqlite:///prefect.db") == {}
    monkeypatch.setenv(SETTING, "12")
    assert server_database_env("postgresql+asyncpg://postgres@127.0.0.1:5432/prefect") == {}
