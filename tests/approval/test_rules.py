"""The approval option and decision rules (pure: no services)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from db.queries.approvals import AdForReview
from domain.approval import (
    ApprovalSettings,
    InvalidDecision,
    check_decision,
    parse_timeout,
    timeout_decision,
)
from domain.errors import InvalidJobSpec
from domain.spec import JobSpec
from flows.approval import approval_form, decision_from_form, form_values, review_markdown


@pytest.mark.parametrize(
    ("given", "seconds", "stored"),
    [("24h", 86400, "1d"), ("90m", 5400, "90m"), ("2d", 172800, "2d"), (600, 600, "10m")],
)
def test_timeouts_are_durations_within_bounds(given: str | int, seconds: int, stored: str) -> None:
    settings = ApprovalSettings(enabled=True, timeout=given)
    assert (settings.timeout_seconds, settings.timeout) == (seconds, stored)
    assert parse_timeout(stored) == seconds


@pytest.mark.parametrize("bad", ["1m", "15d", "soon", "-1h", "", True])
def test_a_bad_timeout_names_the_field_and_what_is_allowed(bad: object) -> None:
    spec = {
        "name": "j",
        "product_id": str(uuid.uuid4()),
        "schedule": {"type": "recurring", "cron": "0 9 * * 1"},
        "approval": {"enabled": True, "timeout": bad},
    }
    with pytest.raises(InvalidJobSpec) as err:
        JobSpec.parse(spec)
    assert err.value.fields == ["approval.timeout"]
    assert "from 5m to 14d" in str(err.value)


def test_on_timeout_is_discard_or_export() -> None:
    spec = {
        "name": "j",
        "product_id": str(uuid.uuid4()),
        "schedule": {"type": "recurring", "cron": "0 9 * * 1"},
        "approval": {"enabled": True, "on_timeout": "approve"},
    }
    with pytest.raises(InvalidJobSpec) as err:
        JobSpec.parse(spec)
    assert err.value.fields == ["approval.on_timeout"]
    # Off by default, and stored with the job's parameters.
    del spec["approval"]
    parsed = JobSpec.parse(spec)
    assert parsed.approval.enabled is False
    assert parsed.job_parameters(None).approval == ApprovalSettings()


def test_a_decision_names_every_ad_explicitly() -> None:
    ads = [uuid.uuid4() for _ in range(3)]
    decision = check_decision(ads, [ads[0]], [str(ads[1]), ads[2]], note="ok", reviewer="ana")
    assert decision.status == "partial" and decision.rejected == (ads[1], ads[2])
    cases = [
        ((), (), "decision: empty"),
        ([ads[0], uuid.uuid4()], ads[1:], "approve: not an ad of this run"),
        ([ads[0]], [ads[0], *ads[1:]], "reject: also approved"),
        ([ads[0]], [ads[1]], "decision: 1 ads undecided"),
        (["nope"], [], "approve: 'nope' is not an ad id"),
    ]
    for approve, reject, message in cases:
        with pytest.raises(InvalidDecision, match=message):
            check_decision(ads, approve, reject)


def test_the_timeout_decides_all_one_way() -> None:
    ads = [uuid.uuid4(), uuid.uuid4()]
    assert timeout_decision(ads, "export", "1d").status == "approved"
    discarded = timeout_decision(ads, "discard", "1d")
    assert discarded.status == "rejected" and "on_timeout=discard" in discarded.note


def test_the_form_has_a_required_choice_per_ad_and_round_trips() -> None:
    reviews = [
        AdForReview(
            id=uuid.uuid4(),
            ad_run_id=uuid.uuid4(),
            template=f"t{i}.png",
            variation_index=i,
            headline=f"Headline | {i}",
            storage_path=f"ads/{i}.png",
            content_type="image/png",
            review_status=None,
        )
        for i in range(2)
    ]
    form = approval_form(reviews, review_markdown("job", reviews, {}))
    schema = form.model_json_schema()
    assert schema["required"] == ["ad_1", "ad_2"]  # no default: an explicit choice
    assert list(schema["properties"])[-2:] == ["note", "reviewer"]
    assert form._description and "Headline \\| 0" in form._description  # type: ignore[attr-defined]
    ids = [r.id for r in reviews]
    decision = check_decision(ids, [ids[1]], [ids[0]], note="n")
    assert decision_from_form(ids, form(**form_values(ids, decision))) == decision
    with pytest.raises(ValueError, match="ad_2"):
        form(ad_1="approve")


async def test_the_waiting_notice_links_the_run_and_shows_thumbnails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image
    from prefect.filesystems import LocalFileSystem
    from pydantic import SecretStr

    from blocks.email_resend import ResendEmail
    from blocks.storage import AdStorage
    from config import get_settings
    from flows.approval_notice import compose_email_notice, compose_slack_notice

    monkeypatch.setenv("AD_SCHEDULER_PREFECT_UI_URL", "https://prefect.example.com/")
    get_settings.cache_clear()
    try:
        storage = AdStorage(filesystem=LocalFileSystem(basepath=str(tmp_path)))
        (tmp_path / "ads").mkdir()
        Image.new("RGB", (540, 540), "navy").save(tmp_path / "ads" / "a.png")
        ad = AdForReview(
            id=uuid.uuid4(),
            ad_run_id=uuid.uuid4(),
            template="t.png",
            variation_index=0,
            headline="Salt & Pepper <!channel>",
            storage_path="ads/a.png",
            content_type="image/png",
            review_status=None,
        )
        run = uuid.uuid4()
        link = f"https://prefect.example.com/runs/flow-run/{run}"
        slack = compose_slack_notice("shoes", run, [ad], storage)
        assert slack["text"].startswith("1 ads waiting for approval")
        text = str(slack["blocks"])
        assert link in text and "&lt;!channel&gt;" in text and "<!channel>" not in text
        block = ResendEmail(api_key=SecretStr("re_x"), from_address="Ads <ads@example.com>")
        email = await compose_email_notice(
            block,
            recipients=["team@example.com"],
            job_name="shoes",
            flow_run_id=run,
            ads=[ad],
            storage=storage,
        )
        assert email["subject"] == "1 ads waiting for approval: shoes" and link in email["html"]
        [thumb] = email["attachments"]
        assert (
            thumb["content_type"] == "image/jpeg" and f"cid:{thumb['content_id']}" in email["html"]
        )
        assert "re_x" not in str(email)
    finally:
        get_settings.cache_clear()
