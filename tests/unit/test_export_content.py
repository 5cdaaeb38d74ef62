"""Composing exports (flows/exports/content.py) from in-memory values: no database, no network."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Any

from domain import text as medium
from flows.exports.content import (
    EMAIL_ENVELOPE_RESERVE,
    TOO_LARGE,
    UNREADABLE,
    AdRunContent,
    ExportedAd,
    ad_key,
    attachment_cost,
    check_recipients,
    compose_email,
    compose_slack_messages,
    content_type_of,
    email_budget,
    flow_run_url,
)

SALT = "Salt & Pepper <!channel>"
DAY = datetime(2026, 11, 29, tzinfo=UTC)


def content(product_name: str, ads: list[tuple[str, str]], **kw: Any) -> AdRunContent:
    run_id = uuid.uuid4()
    values: dict[str, Any] = {
        "ad_run_id": run_id,
        "tenant_id": uuid.uuid4(),
        "product_id": uuid.uuid4(),
        "product_name": product_name,
        "brand_name": "Acme <b>",
        "template_storage_name": "summer|sale.png",
        "template_label": "Summer | <sale>",
        "job_id": None,
        "job_name": "Job & co",
        "flow_run_id": None,
        "when": DAY,
        "ads": tuple(
            ExportedAd(
                storage_path=f"ads/{i}{'.webp' if kind == 'image/webp' else '.png'}",
                headline=headline,
                content_type=kind,
                key=ad_key(run_id, i),
            )
            for i, (headline, kind) in enumerate(ads)
        ),
    }
    values.update(kw)
    return AdRunContent(**values)


def public(path: str) -> str:
    return f"https://cdn.example/{path}"


def _texts(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [
            t
            for k, v in value.items()
            for t in ([v] if k in ("text", "alt_text") and isinstance(v, str) else _texts(v))
        ]
    if isinstance(value, list):
        return [t for v in value for t in _texts(v)]
    return []


def _mrkdwn_texts(value: Any) -> list[str]:
    if isinstance(value, dict):
        if value.get("type") == "mrkdwn":
            return [value["text"]]
        return [t for v in value.values() for t in _mrkdwn_texts(v)]
    if isinstance(value, list):
        return [t for v in value for t in _mrkdwn_texts(v)]
    return []


def test_slack_message_escapes_bounds_and_never_embeds_an_unshowable_image() -> None:
    long_name = SALT + " " + "Extra-long product name " * 20
    ad_run = content(
        long_name, [("Fresh <!channel> & crisp", "image/png"), ("Webp ad", "image/webp")]
    )
    [message] = compose_slack_messages(ad_run, public_url=public)

    assert message["text"].startswith("New ads for Salt &amp; Pepper &lt;!channel&gt; Extra")
    # No ping: every text Slack parses (mrkdwn objects and the top-level text) is escaped;
    # plain_text (header, image title, alt_text) is shown literally by Slack.
    parsed = [message["text"], *_mrkdwn_texts(message["blocks"])]
    assert len(parsed) == 6 and not any("<!channel>" in t for t in parsed)
    header = message["blocks"][0]["text"]["text"]
    assert len(header) == 150 and header.endswith("…")
    images = [b for b in message["blocks"] if b["type"] == "image"]
    assert [b["image_url"] for b in images] == ["https://cdn.example/ads/0.png"]
    assert images[0]["alt_text"] == "Fresh <!channel> & crisp"  # plain text: shown literally
    listed = [b for b in message["blocks"] if b["type"] == "section"]
    assert "Webp ad" in listed[0]["text"]["text"]
    assert "<https://cdn.example/ads/1.webp|open>" in listed[0]["text"]["text"]
    context = message["blocks"][1]["elements"]
    assert context[1]["text"].startswith("*Product:* Salt &amp; Pepper &lt;!channel&gt;")
    assert all(len(t) <= 3000 for t in _texts(message["blocks"]))
    assert len(context) <= medium.SLACK_CONTEXT_ELEMENTS_MAX


def test_slack_splits_many_ads_into_messages_of_at_most_50_blocks() -> None:
    ad_run = content("Shoe", [(f"ad {i}", "image/png") for i in range(120)])
    messages = compose_slack_messages(ad_run, public_url=public)
    assert [len(m["blocks"]) for m in messages] == [50, 50, 24]
    assert messages[1]["text"].endswith("(part 2/3)")
    assert messages[1]["blocks"][0]["type"] == "context"
    images = [b for m in messages for b in m["blocks"] if b["type"] == "image"]
    assert len(images) == 120


def test_slack_without_public_urls_lists_the_files_and_links_the_run() -> None:
    url = flow_run_url("https://prefect.example/", uuid.uuid4())
    ad_run = content("Shoe", [("one", "image/png")], run_url=url)
    [message] = compose_slack_messages(ad_run, public_url=lambda _path: None)
    assert not [b for b in message["blocks"] if b["type"] == "image"]
    assert "summer|sale-0.png" in str(message["blocks"])
    assert url is not None and message["text"].endswith(url)
    assert url.startswith("https://prefect.example/runs/flow-run/")


def test_email_subject_is_one_line_and_html_is_escaped() -> None:
    ad_run = content(
        "Salt & Pepper\r\nBcc: x@example.com",
        [("<b>bold</b>", "image/png")],
        template_storage_name="sum\r\nmer.png",
    )
    params = compose_email(
        [ad_run],
        images={"ads/0.png": b"img"},
        from_address="Ads <ads@example.com>",
        recipients=["a@example.com"],
    )
    assert params["subject"] == (
        "New ads: Acme <b> · Salt & Pepper Bcc: x@example.com · Summer | <sale> · 2026-11-29"
    )
    assert "\r" not in params["subject"] and "\n" not in params["subject"]
    assert "&lt;b&gt;bold&lt;/b&gt;" in params["html"] and "<b>bold</b>" not in params["html"]
    assert "Salt &amp; Pepper" in params["html"]
    [attachment] = params["attachments"]
    assert attachment["filename"] == "sum mer-0.png"
    assert base64.b64decode(attachment["content"]) == b"img"
    assert f'src="cid:{attachment["content_id"]}"' in params["html"]
    assert "reply_to" not in params


def test_email_names_the_ads_it_left_out_and_why() -> None:
    ad_run = content("Shoe", [("a", "image/png"), ("b", "image/png"), ("c", "image/png")])
    params = compose_email(
        [ad_run],
        images={"ads/0.png": b"x", "ads/1.png": TOO_LARGE, "ads/2.png": UNREADABLE},
        from_address="a@example.com",
        recipients=["b@example.com"],
        reply_to="r@example.com",
    )
    assert len(params["attachments"]) == 1 and params["reply_to"] == "r@example.com"
    assert "2 more ads were left out of this email" in params["text"]
    assert "1 to keep this email under Resend's size limit" in params["text"]
    assert "1 because the image could not be read" in params["text"]
    assert "summer|sale-1.png, summer|sale-2.png" in params["text"]


def test_a_digest_names_up_to_three_templates_and_tags_the_job_run() -> None:
    runs = [
        content("Shoe", [("a", "image/png")], template_label=f"T{i}", job_id=uuid.uuid4())
        for i in range(5)
    ]
    job_run = uuid.uuid4()
    params = compose_email(
        runs,
        images={},
        from_address="a@example.com",
        recipients=["b@example.com"],
        digest_job_run_id=job_run,
    )
    assert params["subject"] == "New ads: Acme <b> · Shoe · T0, T1, T2 +2 more · 2026-11-29"
    assert {"name": "job_run", "value": str(job_run).replace("-", "-")} in params["tags"]
    assert params["attachments"] == []


def test_email_budget_and_recipient_rules() -> None:
    assert attachment_cost(3) == 4 + 512
    assert email_budget(EMAIL_ENVELOPE_RESERVE + 10) == 10
    assert check_recipients([]) == "email export has no recipients"
    assert check_recipients(["a@example.com"] * 51) == "Resend accepts at most 50 recipients"
    assert check_recipients(["a@example.com"]) is None


def test_content_types_come_from_the_file_name() -> None:
    assert content_type_of("ads/x.webp") == "image/webp"
    assert content_type_of("ads/x.jpg") == "image/jpeg"
    assert content_type_of("ads/x") == "image/png"
