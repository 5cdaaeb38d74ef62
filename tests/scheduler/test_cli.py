"""The `ad-scheduler` CLI end to end: real database, real Prefect server, no tracebacks."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import yaml
from typer.testing import CliRunner

from db.models import ScheduledJob
from domain.cron import next_fire_time
from scheduler import cli as cli_module
from scheduler.cli import app
from tests.scheduler.conftest import Catalog

runner = CliRunner()


@contextmanager
def sqlite_or_pg_session(catalog: Catalog) -> Iterator[Callable[[Any], None]]:
    """Run statements on the test database from sync test code."""
    import asyncio

    from db.session import session_scope

    statements: list[Any] = []
    yield statements.append

    async def apply() -> None:
        async with session_scope(catalog.db_url) as session:
            for statement in statements:
                await session.execute(statement)

    asyncio.run(apply())


@pytest.fixture
def cli(
    prefect_api: str,
    catalog: Catalog,
    use_database: str,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    """Invoke the CLI for the catalog's tenant (on a wide console, so tables do not wrap)."""
    monkeypatch.setattr(cli_module.console, "width", 200)

    def invoke(*args: str, ok: bool = True) -> Any:
        result = runner.invoke(app, [*args, "--tenant", str(catalog.tenant_id)])
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return invoke


def test_jobs_lifecycle_from_a_yaml_file(cli: Any, catalog: Catalog, tmp_path: Path) -> None:
    spec = {
        "jobs": [
            {
                "name": "Weekly trail ads",
                "product_id": str(catalog.product.id),
                "schedule": {"type": "recurring", "cron": "0 9 * * 1", "timezone": "Europe/Berlin"},
                "max_runs": 4,
                "templates": {"mode": "unused", "count": 2},
            }
        ]
    }
    path = tmp_path / "jobs.yaml"
    path.write_text(yaml.safe_dump(spec))

    created = cli("jobs", "create", "--file", str(path))
    assert "Weekly trail ads" in created.output
    cli("jobs", "create", "--file", str(path))  # idempotent re-apply

    listed = cli("jobs", "list").output
    assert listed.count("Weekly trail ads") == 1
    assert "0 9 * * 1 (Europe/Berlin)" in listed and "0/4" in listed
    assert "Trail Runner 2" in listed and "CET" in listed

    cli("jobs", "pause", "Weekly trail ads", "--note", "brand review")
    assert "paused (brand review)" in cli("jobs", "list", "--status", "paused").output
    cli("jobs", "resume", "Weekly trail ads")
    assert "triggered flow run" in cli("jobs", "run-now", "Weekly trail ads").output
    shown = cli("jobs", "show", "Weekly trail ads").output
    assert "run-scheduled-job/" in shown and "unused: 2" in shown
    cli("jobs", "delete", "Weekly trail ads", "--yes")
    assert "0 scheduled job(s)" in cli("jobs", "list").output
    assert "runs of Weekly trail ads" in cli("runs", "Weekly trail ads").output


def test_jobs_create_from_flags_and_json(cli: Any, catalog: Catalog, tmp_path: Path) -> None:
    out = cli(
        "jobs",
        "create",
        "--name",
        "Flags job",
        "--product",
        str(catalog.product.id),
        "--cron",
        "*/30 8-18 * * 1-5",
        "--tz",
        "Asia/Tokyo",
        "--unused",
        "1",
        "--variations",
        "2",
        "--overlap",
        "queue",
    ).output
    assert "Flags job" in out
    path = tmp_path / "job.json"
    path.write_text(
        json.dumps(
            {
                "name": "Json job",
                "product_id": str(catalog.product.id),
                "schedule": {"type": "recurring", "cron": "@daily"},
            }
        )
    )
    cli("jobs", "create", "-f", str(path))
    listed = cli("jobs", "list").output
    assert "Flags job" in listed and "Json job" in listed


def _create_flags(catalog: Catalog, name: str, *extra: str) -> list[str]:
    return ["jobs", "create", "--name", name, "--product", str(catalog.product.id), *extra]


def assert_short_error(result: Any, code: int, *says: str) -> None:
    """One short message, the right exit status, no traceback."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and 'File "' not in result.output
    assert result.output.count("error:") == 1, result.output
    for text in says:
        assert text in result.output, (text, result.output)


def test_bad_input_exits_2_naming_the_field(cli: Any, catalog: Catalog, tmp_path: Path) -> None:
    bad_cron = cli(*_create_flags(catalog, "Bad", "--cron", "99 9 * * *"), ok=False)
    assert_short_error(bad_cron, 2, "schedule.cron", "allowed:")
    never = cli(*_create_flags(catalog, "Never", "--cron", "0 0 31 2 *"), ok=False)
    assert_short_error(never, 2, "schedule.cron", "never fires")
    zone = cli(*_create_flags(catalog, "Z", "--cron", "0 9 * * 1", "--tz", "right/UTC"), ok=False)
    assert_short_error(zone, 2, "schedule.timezone", "unknown time zone 'right/UTC'")
    both = cli(
        *_create_flags(catalog, "Both", "--cron", "0 9 * * 1", "--at", "2030-01-01T09:00:00+00:00"),
        ok=False,
    )
    assert_short_error(both, 2, "--cron and --at both given")
    grace = cli(*_create_flags(catalog, "G", "--cron", "0 9 * * 1", "--misfire-grace", "0"))
    assert "G" in grace.output  # 0 = no limit, accepted
    grace = cli(
        *_create_flags(catalog, "G2", "--cron", "0 9 * * 1", "--misfire-grace", "5"), ok=False
    )
    assert_short_error(grace, 2, "misfire_grace_seconds", "60..604800")
    dangling = cli(
        *_create_flags(
            catalog,
            "Mail",
            "--cron",
            "0 9 * * 1",
            "--export",
            "email",
            "--email",
            "team@example.com",
            "--email-block",
            "no-such-email",
        ),
        ok=False,
    )
    assert_short_error(dangling, 2, "export.email_block", "no Resend email block named")
    slack = cli(
        *_create_flags(
            catalog,
            "S",
            "--cron",
            "0 9 * * *",
            "--export",
            "slack",
            "--slack-webhook-url",
            "http://example.com/hook",
        ),
        ok=False,
    )
    assert_short_error(slack, 2, "export.slack_webhook_url")
    assert "example.com" not in slack.output  # a webhook URL is never echoed
    missing_file = cli("jobs", "create", "-f", str(tmp_path / "nope.yaml"), ok=False)
    assert_short_error(missing_file, 2, "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    assert_short_error(cli("jobs", "create", "-f", str(broken), ok=False), 2)
    with_flags = cli("jobs", "create", "-f", str(broken), "--cron", "0 9 * * 1", ok=False)
    assert_short_error(with_flags, 2, "--file and --cron both given")
    assert_short_error(cli("jobs", "create", "--name", "x", ok=False), 2, "missing --product")

    cli(*_create_flags(catalog, "Taken", "--cron", "0 9 * * 1"))
    taken = cli(*_create_flags(catalog, "Taken", "--cron", "0 9 * * 1"), ok=False)
    assert_short_error(taken, 2, "already exists")
    assert_short_error(cli("jobs", "list", "--status", "done", ok=False), 2, "--status")
    assert_short_error(cli("jobs", "list", "--product", "p1", ok=False), 2, "--product")
    for command in ("show", "pause", "resume", "delete", "run-now"):
        extra = ["--yes"] if command == "delete" else []
        result = cli("jobs", command, "no-such-job", *extra, ok=False)
        assert_short_error(result, 2, "scheduled job no-such-job not found")
    assert_short_error(cli("runs", "no-such-job", ok=False), 2, "not found")
    assert_short_error(cli("templates", "sync", "--brand", "b", ok=False), 2, "--brand")
    export = cli("export", str(uuid.uuid4()), "--channel", "email", ok=False)
    assert export.exit_code == 2 and "no ad run or job run" in export.output
    assert "Traceback" not in export.output
    bad_tenant = runner.invoke(app, ["jobs", "list", "--tenant", "acme"])
    assert_short_error(bad_tenant, 2, "--tenant: 'acme' is not a UUID")

    # A completed job cannot resume: the job's state, not a failure.
    with sqlite_or_pg_session(catalog) as run:
        run(
            sa.update(ScheduledJob)
            .where(ScheduledJob.tenant_id == catalog.tenant_id, ScheduledJob.name == "Taken")
            .values(status="completed")
        )
    assert_short_error(cli("jobs", "resume", "Taken", ok=False), 2, "is completed")
    assert "0 scheduled job(s)" not in cli("jobs", "list").output


def test_debug_shows_the_traceback(cli: Any, catalog: Catalog) -> None:
    result = runner.invoke(
        app, ["--debug", "jobs", "show", "no-such-job", "--tenant", str(catalog.tenant_id)]
    )
    assert result.exit_code == 2
    assert "Traceback (most recent call last)" in result.output
    assert "NotFoundError" in result.output and "error: scheduled job" in result.output


def test_ad_scheduler_debug_shows_the_traceback_through_the_settings(
    cli: Any, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    from config import get_settings

    monkeypatch.setenv("AD_SCHEDULER_DEBUG", "1")
    get_settings.cache_clear()
    try:
        result = runner.invoke(
            app, ["jobs", "show", "no-such-job", "--tenant", str(catalog.tenant_id)]
        )
    finally:
        monkeypatch.delenv("AD_SCHEDULER_DEBUG")
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert "Traceback (most recent call last)" in result.output
    assert "NotFoundError" in result.output


def test_prefect_unreachable_exits_1_within_seconds(cli: Any, catalog: Catalog) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    cli(*_create_flags(catalog, "Existing", "--cron", "0 9 * * 1"))
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        for args in (
            _create_flags(catalog, "New", "--cron", "0 9 * * 1"),
            ["jobs", "pause", "Existing"],
            ["jobs", "resume", "Existing"],
            ["jobs", "delete", "Existing", "--yes"],
            ["jobs", "run-now", "Existing"],
            ["export", str(uuid.uuid4()), "--channel", "slack"],
        ):
            started = time.monotonic()
            result = cli(*args, ok=False)
            assert time.monotonic() - started < 8, args
            assert_short_error(
                result,
                1,
                "cannot reach the Prefect API at http://127.0.0.1:9/api",
                "PREFECT_API_URL",
                "ad-scheduler up",
            )
    listed = cli("jobs", "list").output  # the row is untouched: active, not deleted
    assert "Existing" in listed and "New" not in listed


def test_database_unreachable_exits_1_without_the_password(
    cli: Any, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    from config import get_settings

    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://postgres:hunter2@127.0.0.1:9/nope")
    # The database stays away: one attempt per command (the CLI's own default is two).
    monkeypatch.setenv("AD_SCHEDULER_DB_RETRY_ATTEMPTS", "1")
    get_settings.cache_clear()
    for args in (
        ["jobs", "list"],
        ["jobs", "show", "x"],
        ["jobs", "pause", "x"],
        ["runs", "x"],
        ["templates", "sync"],
        ["export", str(uuid.uuid4()), "--channel", "email"],
        _create_flags(catalog, "D", "--cron", "0 9 * * 1"),
    ):
        result = cli(*args, ok=False)
        assert_short_error(result, 1, "database")
        assert "hunter2" not in result.output
    upgrade = runner.invoke(app, ["db", "upgrade"])
    assert upgrade.exit_code == 1 and "Traceback" not in upgrade.output
    assert "hunter2" not in upgrade.output


def test_list_and_show_print_the_same_next_run(cli: Any, catalog: Catalog) -> None:
    cli(*_create_flags(catalog, "Berlin", "--cron", "30 2 * * *", "--tz", "Europe/Berlin"))
    expected = next_fire_time("30 2 * * *", "Europe/Berlin")
    shown = expected.astimezone(ZoneInfo("Europe/Berlin")).strftime("%Y-%m-%d %H:%M %Z")
    assert shown in cli("jobs", "list").output
    assert re.search(rf"next run\s*│\s*{re.escape(shown)}", cli("jobs", "show", "Berlin").output)
    cli("jobs", "pause", "Berlin")
    assert shown not in cli("jobs", "list").output
    assert re.search(r"next run\s*│\s*—", cli("jobs", "show", "Berlin").output)
    resumed = cli("jobs", "resume", "Berlin").output
    assert f"next run {shown}" in resumed


def test_sync_facade(prefect_api: str, catalog: Catalog, data_dir: Path) -> None:
    from scheduler.sdk import SyncAdScheduler

    ads = SyncAdScheduler(catalog.tenant_id, database_url=catalog.db_url)
    spec = {
        "name": "Sync job",
        "product_id": str(catalog.product.id),
        "schedule": {"type": "recurring", "cron": "0 7 * * *", "timezone": "UTC"},
    }
    job = ads.apply(spec)
    assert ads.apply(spec).id == job.id
    assert ads.pause(job.id, "sync pause").status == "paused"
    assert [j.name for j in ads.list_jobs(status="paused")] == ["Sync job"]
    ads.delete(job.id)
    assert ads.list_jobs() == []
