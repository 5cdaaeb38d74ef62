"""Text that survives its medium: the pure rules, and the composers that use them."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from domain import text as medium

SALT = "Salt & Pepper <!channel>"


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        (SALT, "Salt &amp; Pepper &lt;!channel&gt;"),
        (
            "<@U123> <!here> <https://evil.example|click>",
            "&lt;@U123&gt; &lt;!here&gt; &lt;https://evil.example|click&gt;",
        ),
        ("a &amp; b", "a &amp;amp; b"),  # already-escaped text is data too
        ("*bold* _it_ `code`", "*bold* _it_ `code`"),  # formatting is not a control character
        ("", ""),
    ],
)
def test_slack_escape(raw: str, escaped: str) -> None:
    assert medium.slack_escape(raw) == escaped


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("abc", 3, "abc"),
        ("abcd", 3, "ab…"),
        ("a&amp;b", 4, "a…"),  # never "a&a…": a cut entity would show raw
        ("a&lt;", 5, "a&lt;"),
        ("ab&gt;cd", 6, "ab…"),
        ("x" * 10, 0, ""),
    ],
)
def test_clip_escaped_never_cuts_an_entity(text: str, limit: int, expected: str) -> None:
    assert medium.clip_escaped(text, limit) == expected


@pytest.mark.parametrize(
    ("maker", "limit"),
    [
        (medium.slack_mrkdwn, medium.SLACK_SECTION_TEXT_MAX),
        (lambda s: medium.slack_plain(s, medium.SLACK_HEADER_MAX), 150),
        (lambda s: medium.slack_plain(s, medium.SLACK_IMAGE_ALT_TEXT_MAX), 2000),
        (medium.slack_text_fallback, medium.SLACK_TEXT_MAX),
        (medium.email_header, medium.EMAIL_SUBJECT_MAX),
    ],
)
@pytest.mark.parametrize("unit", ["x", "&", "<!channel>", "é", "\r\n"])
def test_every_slack_and_header_text_fits_its_limit(maker: Any, limit: int, unit: str) -> None:
    out = maker(unit * 5000)
    assert len(out) <= limit
    assert out.endswith("…") or not out
    if maker in (medium.slack_mrkdwn, medium.slack_text_fallback):
        assert "<" not in out and ">" not in out  # escaped: nothing Slack could parse
    if maker is not medium.slack_mrkdwn:
        assert "\n" not in out and "\r" not in out  # one-line media


@pytest.mark.parametrize(
    ("content_type", "url", "shown"),
    [
        ("image/png", "https://cdn.example/a.png", True),
        ("image/jpeg", "https://cdn.example/a.jpg", True),
        ("image/gif", "https://cdn.example/a", True),
        ("image/png; charset=binary", "https://cdn.example/a", True),
        ("image/webp", "https://cdn.example/a.webp", False),  # Slack rejects the whole post
        ("image/svg+xml", "https://cdn.example/a.svg", False),
        ("image/avif", "https://cdn.example/a.avif", False),
        (None, "https://cdn.example/a.PNG?sig=1", True),
        (None, "https://cdn.example/a.webp", False),
        ("image/png", None, False),
        ("image/png", "https://cdn.example/" + "a" * 3000, False),  # image_url limit 3000
    ],
)
def test_slack_shows_image(content_type: str | None, url: str | None, shown: bool) -> None:
    assert medium.slack_shows_image(content_type, url) is shown


@pytest.mark.parametrize(
    ("raw", "cell"),
    [
        ("Buy 1 | get 1", "Buy 1 \\| get 1"),
        ("line one\nline two", "line one<br>line two"),
        ("a\r\nb\rc", "a<br>b<br>c"),
        ("<script>x</script>", "&lt;script&gt;x&lt;/script&gt;"),
        ('say "hi" & go', "say &quot;hi&quot; &amp; go"),
    ],
)
def test_markdown_cell(raw: str, cell: str) -> None:
    assert medium.markdown_cell(raw) == cell


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("t1.png", "`t1.png`"),
        ("a|b.png", "`a\\|b.png`"),
        ("we`ird.png", "`` we`ird.png ``"),
        ("two\nlines.png", "`two lines.png`"),
    ],
)
def test_markdown_code_cell(raw: str, code: str) -> None:
    assert medium.markdown_code_cell(raw) == code


@pytest.mark.parametrize(
    ("raw", "header"),
    [
        ("New ads: Salt\r\nBcc: victim@example.com", "New ads: Salt Bcc: victim@example.com"),
        ("a\nb", "a b"),
        ("tab\there", "tab here"),
        ("nul\x00byte", "nul byte"),
        ("line\u2028sep", "line sep"),
        ("  spaced   out  ", "spaced out"),
    ],
)
def test_email_header_is_one_line(raw: str, header: str) -> None:
    assert medium.email_header(raw) == header


def test_html_text_escapes_markup_and_quotes() -> None:
    assert medium.html_text(SALT + "\"'") == "Salt &amp; Pepper &lt;!channel&gt;&quot;&#x27;"


# --- the run artifact (flows/artifacts.py); the export composers: test_export_content.py -----


def test_run_artifact_table_survives_pipes_and_newlines() -> None:
    from flows.artifacts import render_run_markdown
    from flows.pipeline import AdRunOutcome, AdSummary, PipelineResult

    result = PipelineResult(
        outcomes=[
            AdRunOutcome(
                ad_run_id=uuid.uuid4(),
                template="a|b.png",
                ok=True,
                ads=[AdSummary(storage_path="ads/1.png", headline="Buy 1 | get 1\nfree")],
            ),
            AdRunOutcome(
                ad_run_id=uuid.uuid4(),
                template="c.png",
                ok=False,
                error="provider said: 500 | Internal\nError <html>",
            ),
        ]
    )
    markdown = render_run_markdown("Job | one\nline", result)
    lines = markdown.splitlines()
    assert lines[0] == "## Ads made: Job | one line"
    rows = [line for line in lines if line.startswith("| `")]
    assert rows == [
        "| `a\\|b.png` | ✅ completed | `ads/1.png` |",
        "| `c.png` | ❌ failed | provider said: 500 \\| Internal<br>Error &lt;html&gt; |",
    ]
    for row in rows:  # three cells each, whatever the data held
        assert len(row.replace("\\|", "").strip("|").split("|")) == 3
