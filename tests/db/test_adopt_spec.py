"""Reading the old scheduler page's rows as job specs (`scheduler.adopt.legacy_spec`)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from db.models import ScheduledJob
from domain.errors import InvalidJobSpec
from domain.spec import JobSpec
from scheduler.adopt import catalog_name, legacy_spec

SLACK = "https://hooks.slack.com/services/T000/B000/abcd1234"


def _row(**overrides: Any) -> ScheduledJob:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "product_id": uuid.uuid4(),
        "brand_id": uuid.uuid4(),
        "name": "Old job",
        "schedule_type": "recurring",
        "cron_expression": "0 9 * * 1",
        "scheduled_at": None,
        "max_runs": 4,
        "template_mode": "unused",
        "template_count": 2,
        "template_ids": None,
        "parameters": {},
    }
    values.update(overrides)
    return ScheduledJob(**values)


def test_old_keys_map_to_the_projects_parameters() -> None:
    row = _row(
        parameters={
            "num_variations": 4,
            "content_source": "benefits",
            "color_mode": "complementary",
            "image_mode": "manual",
            "product_image_path": "products/shoe.png",
            "export_destination": "both",
            "export_email": ["a@example.com", "b@example.com"],
            "slack_webhook_url": SLACK,
            "brand_voice": "calm",
        }
    )
    spec, notes = legacy_spec(row, email_block="team-email")
    parsed = JobSpec.parse(spec)
    assert parsed.ad.model_dump() == {
        "variations": 4,
        "content_source": "benefits",
        "color_mode": "complementary",
        "image_mode": "specific",
        "product_image": "products/shoe.png",
        "generator_block": None,
    }
    assert parsed.export.destination == "both"
    assert parsed.export.email_recipients == ["a@example.com", "b@example.com"]
    assert parsed.export.slack_webhook_url is not None
    # Only a block name reaches the stored parameters.
    stored = parsed.job_parameters("ad-slack-x").model_dump(mode="json")
    assert SLACK not in str(stored) and stored["export"]["slack_webhook_block"] == "ad-slack-x"
    assert parsed.schedule.model_dump()["timezone"] == "UTC"  # the old worker's zone
    assert notes == ["parameters not used by ad-scheduler (ignored): brand_voice"]


def _fields(row: ScheduledJob, **kw: Any) -> dict[str, str]:
    with pytest.raises(InvalidJobSpec) as info:
        legacy_spec(row, **kw)
    return {p.field: p.message for p in info.value.problems}


def test_each_problem_names_the_rows_own_field() -> None:
    problems = _fields(
        _row(
            cron_expression=None,
            template_count=None,
            parameters={"export_destination": "email", "export_email": 7},
        )
    )
    assert set(problems) == {
        "cron_expression",
        "template_count",
        "parameters.export_email",
        "parameters.export_destination",
    }
    assert "--email-block" in problems["parameters.export_destination"]

    slack = _fields(_row(parameters={"export_destination": "slack"}))
    assert "--slack-webhook-block" in slack["parameters.slack_webhook_url"]

    bad = _fields(
        _row(
            parameters={
                "num_variations": 0,
                "content_source": "tiktok",
                "slack_webhook_url": "http://x.example/secret",
            }
        )
    )
    assert set(bad) == {
        "parameters.num_variations",
        "parameters.content_source",
        "parameters.slack_webhook_url",
    }
    assert "x.example/secret" not in str(bad)  # a webhook URL is never echoed


def test_one_time_rows_and_specific_templates() -> None:
    at = datetime.now(UTC) + timedelta(days=2)
    spec, _ = legacy_spec(
        _row(
            schedule_type="one_time",
            cron_expression=None,
            scheduled_at=at,
            max_runs=None,
            template_mode="specific",
            template_ids=["templates/a.png", "b.png", "c.png"],
        ),
        catalog={"a.png", "b.png"},
    )
    parsed = JobSpec.parse(spec)
    assert parsed.is_one_time and parsed.schedule.model_dump()["at"] == at
    assert parsed.templates.model_dump()["templates"] == ["a.png", "b.png", "c.png"]
    # A one-time job whose time has passed is still readable (it runs now or is a misfire).
    legacy_spec(_row(schedule_type="one_time", scheduled_at=at - timedelta(days=9), max_runs=None))
    assert "scheduled_at" in _fields(_row(schedule_type="one_time", scheduled_at=None))


def test_catalog_name_matches_storage_paths() -> None:
    catalog = {"summer.png", "sets/winter.png"}
    assert catalog_name("summer.png", catalog) == "summer.png"
    assert catalog_name("templates/summer.png", catalog) == "summer.png"
    assert catalog_name("bucket/templates/sets/winter.png", catalog) == "sets/winter.png"
    assert catalog_name("autumn.png", catalog) is None
