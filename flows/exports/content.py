"""What an export says: the email (HTML, text, inline images) and the Slack Block Kit messages.

Pure functions of in-memory values (`AdRunContent`, image bytes already read): no database, no
network, no Prefect. Every name, headline and error in them is data, escaped and bounded for its
medium by `domain.text`.
"""

from __future__ import annotations

import base64
import math
import mimetypes
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any
from uuid import UUID

from domain import text as medium

#: Slack's limits (https://docs.slack.dev/reference/block-kit/blocks).
SLACK_MAX_BLOCKS = 50
SLACK_HEADER_MAX = 150
SLACK_SECTION_MAX = 3000
SLACK_IMAGE_URL_MAX = 3000
#: Room kept in an email for the JSON envelope, HTML, text and the note about left-out images.
EMAIL_ENVELOPE_RESERVE = 256 * 1024
#: Per-attachment JSON overhead (keys, filename, content id).
ATTACHMENT_OVERHEAD = 512
#: Resend's limit on `to` addresses.
MAX_RECIPIENTS = 50

#: Why an image is not in an email.
TOO_LARGE = "too large"
UNREADABLE = "could not be read from storage"


@dataclass(frozen=True)
class ExportedAd:
    """One generated ad as an export shows it.

    Attributes:
        storage_path: Where the image is stored.
        headline: Its headline ("" when none).
        content_type: Its MIME type (`image/png`, …).
        key: Unique within an email (its inline-image content id).
    """

    storage_path: str
    headline: str
    content_type: str
    key: str


def ad_key(ad_run_id: UUID, variation_index: int) -> str:
    """An ad's inline-image content id: the same in a run's export and in a later re-send."""
    return f"ad-{ad_run_id.hex}-{variation_index}"


def content_type_of(path: str) -> str:
    """The MIME type of an image from its file name (`image/png` when unknown)."""
    guessed, _ = mimetypes.guess_type(path)
    return guessed or "image/png"


@dataclass(frozen=True)
class AdRunContent:
    """One ad run with everything an email or a Slack message says about it.

    Built from the pipeline's in-memory outcome of a run (`flows.exports.tasks`) or, for a
    later re-send, from the stored rows (`flows.exports.records.load_ad_run_contents`).

    Attributes:
        ad_run_id: The ad run.
        tenant_id: Its tenant.
        product_id: Its product.
        product_name: The product's name.
        brand_name: The brand's name.
        template_storage_name: The template's file in storage.
        template_label: The template's catalog name (its file name when it has none).
        job_id: The scheduled job, or None for a manual run.
        job_name: The job's name ("manual run" for a manual run).
        flow_run_id: The Prefect flow run that made it, when known.
        when: When it completed (the date in subjects).
        ads: Its ads, in variation order.
        run_url: Link to the flow run in the Prefect UI, when configured.
    """

    ad_run_id: UUID
    tenant_id: UUID
    product_id: UUID
    product_name: str
    brand_name: str
    template_storage_name: str
    template_label: str
    job_id: UUID | None
    job_name: str
    flow_run_id: UUID | None
    when: datetime
    ads: tuple[ExportedAd, ...] = field(default_factory=tuple)
    run_url: str | None = None

    def file_name(self, ad: ExportedAd) -> str:
        """A file name that says which template an ad came from."""
        stem = PurePosixPath(self.template_storage_name).stem
        return f"{stem}-{PurePosixPath(ad.storage_path).name}"


def flow_run_url(ui_url: str, flow_run_id: UUID | None) -> str | None:
    """Link to a flow run in the Prefect UI at `ui_url` ("" when no UI URL is configured)."""
    base = ui_url.strip().rstrip("/")
    if not base or flow_run_id is None:
        return None
    return f"{base}/runs/flow-run/{flow_run_id}"


def tag_value(value: str) -> str:
    """A Resend tag value: ASCII letters, digits, `_` and `-`, at most 256 characters."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", value)[:256] or "none"


def attachment_cost(size: int) -> int:
    """Bytes an image of `size` bytes adds to an email (base64 plus JSON overhead)."""
    return 4 * math.ceil(size / 3) + ATTACHMENT_OVERHEAD


def email_budget(max_message_bytes: int) -> int:
    """Bytes of attachments an email may carry under the provider's message limit."""
    return max_message_bytes - EMAIL_ENVELOPE_RESERVE


def check_recipients(recipients: Sequence[str]) -> str | None:
    """Why an email cannot go to these recipients, or None when it can."""
    if not recipients:
        return "email export has no recipients"
    if len(recipients) > MAX_RECIPIENTS:
        return f"Resend accepts at most {MAX_RECIPIENTS} recipients"
    return None


def compose_email(
    contents: Sequence[AdRunContent],
    *,
    images: Mapping[str, bytes | str],
    from_address: str,
    recipients: Sequence[str],
    reply_to: str | None = None,
    digest_job_run_id: UUID | None = None,
) -> dict[str, Any]:
    """Build the `POST /emails` body: inline images (`cid:`), an HTML and a text part.

    Args:
        contents: One ad run (per-ad-run email) or all ad runs of a job run (digest); not empty.
        images: Per ad storage path, its bytes (attached inline) or why it is left out
            (`TOO_LARGE`, `UNREADABLE`); a path missing here counts as unreadable.
        from_address: The sender.
        recipients: 1 to 50 addresses (see `check_recipients`).
        reply_to: Where replies go, if not to the sender.
        digest_job_run_id: The job run, for a digest.

    Returns:
        The request body (`from`, `to`, `subject`, `html`, `text`, `tags`, `attachments`, …).
    """
    first = contents[0]
    brand, product = first.brand_name, first.product_name
    day = first.when.date().isoformat()
    templates = [c.template_label for c in contents]
    if digest_job_run_id is None:
        subject = f"New ads: {brand} · {product} · {templates[0]} · {day}"
    else:
        shown = ", ".join(templates[:3]) + (
            f" +{len(templates) - 3} more" if len(templates) > 3 else ""
        )
        subject = f"New ads: {brand} · {product} · {shown} · {day}"
    # A header is one line: CR/LF in a name must not start another header.
    subject = medium.email_header(subject)

    included: list[tuple[AdRunContent, ExportedAd, str]] = []
    left_out: list[tuple[AdRunContent, ExportedAd, str]] = []
    for content in contents:
        for ad in content.ads:
            data = images.get(ad.storage_path, UNREADABLE)
            if isinstance(data, str):
                left_out.append((content, ad, data))
            else:
                included.append((content, ad, base64.b64encode(data).decode("ascii")))

    esc = medium.html_text
    parts_html: list[str] = [
        '<!doctype html><html><body style="font-family:Arial,Helvetica,sans-serif;color:#111">',
        f'<h1 style="font-size:20px">New ads for {esc(product)}</h1>',
    ]
    parts_text: list[str] = [f"New ads for {product}", ""]
    for content in contents:
        meta = (
            f"Brand: {content.brand_name} · Product: {content.product_name} · "
            f"Template: {content.template_label} · Job: {content.job_name} · "
            f"{content.when.date().isoformat()}"
        )
        parts_html.append(f'<h2 style="font-size:16px">{esc(content.template_label)}</h2>')
        parts_html.append(f'<p style="color:#555">{esc(meta)}</p>')
        parts_text += [f"Template: {content.template_label}", meta]
        if content.run_url:
            parts_html.append(
                f'<p><a href="{esc(content.run_url)}">Open the run in Prefect</a></p>'
            )
            parts_text.append(f"Run in Prefect: {content.run_url}")
        for owner, ad, _data in included:
            if owner is not content:
                continue
            label = ad.headline or content.file_name(ad)
            parts_html.append(
                f'<div style="margin:12px 0"><img src="cid:{ad.key}" '
                f'alt="{esc(label)}"'
                f' width="480" style="max-width:100%;height:auto;border:1px solid #ddd">'
                f'<p>{esc(label)} <span style="color:#777">({esc(content.file_name(ad))})'
                "</span></p></div>"
            )
            parts_text.append(f"- {label} ({content.file_name(ad)}, attached)")
        parts_text.append("")
    if left_out:
        sentence = _left_out_sentence(left_out)
        parts_html.append(f'<p style="color:#a16207">{esc(sentence)}</p>')
        parts_text.append(sentence)
    parts_html.append(
        '<p style="color:#777;font-size:12px">Sent by ad-scheduler.</p></body></html>'
    )

    subject_tag = (
        [{"name": "job_run", "value": tag_value(str(digest_job_run_id))}]
        if digest_job_run_id is not None
        else [{"name": "ad_run", "value": tag_value(str(first.ad_run_id))}]
    )
    params: dict[str, Any] = {
        "from": from_address,
        "to": list(recipients),
        "subject": subject,
        "html": "".join(parts_html),
        "text": "\n".join(parts_text),
        "tags": [
            {"name": "job", "value": tag_value(str(first.job_id) if first.job_id else "manual")},
            {"name": "product", "value": tag_value(str(first.product_id))},
            *subject_tag,
        ],
        "attachments": [
            {
                # A MIME header parameter: one line, like the subject.
                "filename": medium.email_header(content.file_name(ad)),
                "content": data_b64,
                "content_type": ad.content_type,
                "content_id": ad.key,
            }
            for content, ad, data_b64 in included
        ],
    }
    if reply_to:
        params["reply_to"] = reply_to
    return params


def _left_out_sentence(left_out: list[tuple[AdRunContent, ExportedAd, str]]) -> str:
    names = ", ".join(c.file_name(ad) for c, ad, _why in left_out)
    too_large = sum(1 for *_x, why in left_out if why == TOO_LARGE)
    unreadable = len(left_out) - too_large
    reasons = []
    if too_large:
        reasons.append(f"{too_large} to keep this email under Resend's size limit")
    if unreadable:
        reasons.append(f"{unreadable} because the image could not be read")
    many = len(left_out) != 1
    return (
        f"{len(left_out)} more ad{'s' if many else ''} {'were' if many else 'was'} left out of "
        f"this email ({'; '.join(reasons)}): {names}. Find them in the ad storage or in the "
        "Prefect run."
    )


def compose_slack_messages(
    content: AdRunContent, *, public_url: Callable[[str], str | None]
) -> list[dict[str, Any]]:
    """Block Kit messages for one ad run, split so that none has more than 50 blocks.

    The first message has a header and a context line (brand, product, template, job, and a link
    to the flow run when the Prefect UI URL is configured); each ad is an image block when the
    storage gives a URL Slack can fetch, otherwise the ads are listed by file name. Every
    message has a `text` fallback.

    Args:
        content: The ad run.
        public_url: A storage path's public URL, or None (e.g. `AdStorage.public_url`).

    Returns:
        The messages, in posting order (`text` and `blocks` each).
    """
    product, brand = content.product_name, content.brand_name
    context_elements: list[dict[str, Any]] = [
        {"type": "mrkdwn", "text": f"*Brand:* {_context_text(brand)}"},
        {"type": "mrkdwn", "text": f"*Product:* {_context_text(product)}"},
        {"type": "mrkdwn", "text": f"*Template:* {_context_text(content.template_label)}"},
        {"type": "mrkdwn", "text": f"*Job:* {_context_text(content.job_name)}"},
    ]
    link = content.run_url
    if link:
        context_elements.append({"type": "mrkdwn", "text": f"<{link}|Open the run in Prefect>"})
    head: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": medium.slack_plain(
                    f"New ads: {product} · {content.template_label}", SLACK_HEADER_MAX
                ),
                "emoji": True,
            },
        },
        {"type": "context", "elements": context_elements},
    ]
    body: list[dict[str, Any]] = []
    unlinked: list[str] = []
    for index, ad in enumerate(content.ads, start=1):
        name = content.file_name(ad)
        label = ad.headline or name
        url = public_url(ad.storage_path)
        # Only types Slack renders go in an image block: one WebP would get the post rejected.
        if medium.slack_shows_image(ad.content_type, url):
            body.append(
                {
                    "type": "image",
                    "image_url": url,
                    "alt_text": medium.slack_plain(label, medium.SLACK_IMAGE_ALT_TEXT_MAX),
                    "title": {
                        "type": "plain_text",
                        "text": medium.slack_plain(
                            f"{index}. {label}", medium.SLACK_IMAGE_TITLE_MAX
                        ),
                    },
                }
            )
        else:
            line = f"• `{medium.slack_escape(medium.single_line(name))}`" + (
                f" — {medium.slack_escape(medium.single_line(ad.headline))}" if ad.headline else ""
            )
            if url:
                line += f" (<{url}|open>)" if len(url) <= SLACK_IMAGE_URL_MAX else ""
            unlinked.append(line)
    if unlinked:
        intro = "Ad files (not shown as images: no public link, or a format Slack does not show):"
        section_lines: list[str] = [intro]
        for line in unlinked:
            if len("\n".join([*section_lines, line])) > SLACK_SECTION_MAX:
                body.append(_section("\n".join(section_lines)))
                section_lines = []
            section_lines.append(medium.clip_escaped(line, SLACK_SECTION_MAX))
        body.append(_section("\n".join(section_lines)))

    # The top-level text is mrkdwn too (and shown in notifications): escaped, so a name like
    # "<!channel>" cannot ping anyone; the link is added after escaping.
    fallback = medium.slack_text_fallback(
        f"New ads for {product} ({brand}) from template {content.template_label}: "
        f"{len(content.ads)} ad{'s' if len(content.ads) != 1 else ''}"
    ) + (f" · {link}" if link else "")
    chunks: list[list[dict[str, Any]]] = []
    first_room = SLACK_MAX_BLOCKS - len(head)
    chunks.append([*head, *body[:first_room]])
    rest = body[first_room:]
    while rest:
        room = SLACK_MAX_BLOCKS - 1  # one context block says which part this is
        chunks.append(rest[:room])
        rest = rest[room:]
    total = len(chunks)
    messages: list[dict[str, Any]] = []
    for number, chunk in enumerate(chunks, start=1):
        blocks = chunk
        if number > 1:
            continued = (
                medium.slack_mrkdwn(
                    f"{product} · {content.template_label}", medium.SLACK_CONTEXT_TEXT_MAX - 20
                )
                + f" (part {number}/{total})"
            )
            blocks = [
                {"type": "context", "elements": [{"type": "mrkdwn", "text": continued}]},
                *blocks,
            ]
        text = fallback if total == 1 else f"{fallback} (part {number}/{total})"
        messages.append({"text": text, "blocks": blocks})
    return messages


def _section(text: str) -> dict[str, Any]:
    bounded = medium.clip_escaped(text, SLACK_SECTION_MAX)
    return {"type": "section", "text": {"type": "mrkdwn", "text": bounded}}


def _context_text(text: str) -> str:
    """A name in a context element: escaped, bounded (with room for its `*Label:* `)."""
    return medium.slack_mrkdwn(medium.single_line(text), medium.SLACK_CONTEXT_TEXT_MAX - 20)
