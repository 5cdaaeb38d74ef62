"""spec → row → spec is the identity (`db.job_rows.fill_row` / `spec_from_row`), pure: no database.

Stored forms that deliberately differ from what was given (uploaded files become their storage
names, a Slack webhook URL becomes its block's name) are pinned by their own tests.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from db.job_rows import ResolvedRefs, fill_row, next_run_for, spec_from_row
from db.models import ScheduledJob
from domain.spec import JobSpec, SpecificTemplates, UnusedTemplates

CRONS = ["0 9 * * 1", "*/15 8-18 * * 1-5", "30 2 * * *", "0 0 1 * *", "@daily", "5 4 * * sun"]
ZONES = ["UTC", "America/New_York", "Europe/Berlin", "Asia/Tokyo", "Australia/Lord_Howe"]
TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp")),
    min_size=1,
    max_size=40,
)
BLOCK = st.from_regex(r"\A[a-z0-9][a-z0-9-]{0,20}\Z")
STORAGE = st.from_regex(r"\A[a-z0-9][a-z0-9-]{0,12}\.png\Z")


@st.composite
def schedules(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.booleans()):
        return {
            "type": "recurring",
            "cron": draw(st.sampled_from(CRONS)),
            "timezone": draw(st.sampled_from(ZONES)),
            "jitter_seconds": draw(st.integers(0, 3600)),
        }
    at = datetime.now(UTC) + timedelta(minutes=draw(st.integers(10, 10**6)))
    return {"type": "one_time", "at": at, "timezone": draw(st.sampled_from(ZONES))}


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    schedule = draw(schedules())
    if draw(st.booleans()):
        templates: dict[str, Any] = {
            "mode": "unused",
            "count": draw(st.integers(1, 50)),
            "when_exhausted": draw(st.sampled_from(["recycle", "skip", "fail"])),
        }
    else:
        names = draw(st.lists(STORAGE, min_size=1, max_size=5, unique=True))
        templates = {"mode": "specific", "templates": names}
    export: dict[str, Any] = {"destination": "none"}
    if draw(st.booleans()):
        users = draw(
            st.lists(st.from_regex(r"\A[a-z]{1,8}\Z"), min_size=1, max_size=3, unique=True)
        )
        export = {
            "destination": "email",
            "email_recipients": [f"{u}@example.com" for u in users],
            "email_block": draw(BLOCK),
            "email_mode": draw(st.sampled_from(["per_ad_run", "digest"])),
        }
    one_time = schedule["type"] == "one_time"
    spec: dict[str, Any] = {
        "name": draw(TEXT),
        "product_id": draw(st.uuids()),
        "description": draw(st.one_of(st.just(""), TEXT)),
        "schedule": schedule,
        "max_runs": draw(
            st.sampled_from([None, 1]) if one_time else st.none() | st.integers(1, 500)
        ),
        "templates": templates,
        "ad": {
            "variations": draw(st.integers(1, 10)),
            "content_source": draw(st.sampled_from(["hooks", "benefits", "recreate_template"])),
            "color_mode": draw(st.sampled_from(["original", "brand", "complementary"])),
            "image_mode": "auto",
            "generator_block": draw(st.none() | BLOCK),
        },
        "export": export,
        "template_concurrency": draw(st.integers(1, 32)),
        "overlap": draw(st.sampled_from(["skip", "queue"])),
        "misfire_grace_seconds": draw(st.sampled_from([0, 60, 3600, 604800])),
        "max_consecutive_failures": draw(st.integers(1, 100)),
        "tenant_id": draw(st.uuids()),
    }
    return spec


def _refs(spec: JobSpec) -> ResolvedRefs:
    """What the database would resolve the spec's references to (names resolve to themselves)."""
    brand = uuid.uuid5(uuid.NAMESPACE_OID, str(spec.product_id))
    tpl = spec.templates
    if isinstance(tpl, UnusedTemplates):
        return ResolvedRefs(spec.product_id, brand, "unused", tpl.count, None, tpl.when_exhausted)
    assert isinstance(tpl, SpecificTemplates)
    return ResolvedRefs(
        spec.product_id, brand, "specific", len(tpl.templates), tpl.templates, "recycle"
    )


def _row_of(spec: JobSpec, slack_block: str | None = None) -> ScheduledJob:
    row = ScheduledJob(id=uuid.uuid4(), tenant_id=spec.tenant_id, status="active")
    fill_row(row, spec, _refs(spec), slack_block)
    return row


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_spec_to_row_and_back_is_the_identity(data: dict[str, Any]) -> None:
    spec = JobSpec.parse(data)
    row = _row_of(spec)
    assert spec_from_row(row) == spec
    # And the row is a fixed point: writing the read-back spec changes no column.
    again = _row_of(spec_from_row(row))
    columns = [c.key for c in ScheduledJob.__table__.columns if c.key != "id"]
    assert {c: getattr(again, c) for c in columns} == {c: getattr(row, c) for c in columns}


def test_uploaded_files_come_back_as_their_storage_names(tmp_path: Path) -> None:
    image = tmp_path / "hero.png"
    image.write_bytes(b"not read here: the SDK reads and names uploads")
    spec = JobSpec.parse(
        {
            "name": "Uploads",
            "product_id": uuid.uuid4(),
            "schedule": {"type": "recurring", "cron": "0 9 * * 1"},
            "templates": {"mode": "uploaded", "files": [str(image)]},
        }
    )
    refs = ResolvedRefs(spec.product_id, uuid.uuid4(), "uploaded", 1, ["uploads/ab.png"], "recycle")
    row = ScheduledJob(id=uuid.uuid4(), tenant_id=uuid.uuid4())
    fill_row(row, spec, refs, None)
    back = spec_from_row(row)
    assert back.templates == SpecificTemplates(templates=["uploads/ab.png"])
    assert back.model_dump(exclude={"templates", "tenant_id"}) == spec.model_dump(
        exclude={"templates", "tenant_id"}
    )


def test_a_slack_webhook_url_is_stored_as_its_block_name_only() -> None:
    url = "https://hooks.slack.com/services/T000/B000/secret-part"
    spec = JobSpec.parse(
        {
            "name": "Slack",
            "product_id": uuid.uuid4(),
            "schedule": {"type": "recurring", "cron": "0 9 * * 1"},
            "export": {"destination": "slack", "slack_webhook_url": url},
        }
    )
    row = _row_of(spec, slack_block="ad-slack-abc")
    assert "secret-part" not in str(row.parameters)
    back = spec_from_row(row)
    assert back.export.slack_webhook_url is None
    assert back.export.slack_webhook_block == "ad-slack-abc"
    # Re-applying the read-back spec keeps the job's own block (no URL is ever needed again).
    assert _row_of(back).parameters == row.parameters


def test_next_run_of_a_filled_row_is_the_schedules_next_fire_time() -> None:
    spec = JobSpec.parse(
        {
            "name": "Next",
            "product_id": uuid.uuid4(),
            "schedule": {"type": "recurring", "cron": "30 2 * * *", "timezone": "Europe/Berlin"},
        }
    )
    row = _row_of(spec)
    now = datetime(2026, 3, 28, 12, tzinfo=UTC)  # the night Berlin skips 02:00–03:00
    schedule = spec.schedule
    assert next_run_for(row, now=now) == schedule.next_fire_time(after=now)  # type: ignore[union-attr]
    row.status = "paused"
    assert next_run_for(row, now=now) is None
