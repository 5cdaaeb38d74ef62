"""The `ad-scheduler` CLI end to end: real database, real Prefect server, no tracebacks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from scheduler import cli as cli_module
from scheduler.cli import app
from tests.scheduler.conftest import Catalog

runner = CliRunner()


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


def test_errors_are_readable(cli: Any, catalog: Catalog) -> None:
    bad = cli(
        "jobs",
        "create",
        "--name",
        "Bad",
        "--product",
        str(catalog.product.id),
        "--cron",
        "99 9 * * *",
        ok=False,
    )
    assert bad.exit_code == 1
    assert "schedule.cron" in bad.output and "Traceback" not in bad.output
    missing = cli("jobs", "show", "no-such-job", ok=False)
    assert missing.exit_code == 1 and "not found" in missing.output
    slack = cli(
        "jobs",
        "create",
        "--name",
        "S",
        "--product",
        str(catalog.product.id),
        "--cron",
        "0 9 * * *",
        "--export",
        "slack",
        "--slack-webhook-url",
        "http://example.com/hook",
        ok=False,
    )
    assert slack.exit_code == 1 and "export.slack_webhook_url" in slack.output
    assert "example.com" not in slack.output  # a webhook URL is never echoed
    assert "0 scheduled job(s)" in cli("jobs", "list").output


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
    assert [j.name for j in ads.list(status="paused")] == ["Sync job"]
    ads.delete(job.id)
    assert ads.list() == []
