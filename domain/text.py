"""Text that survives its medium: escaping and bounding rules for every place user or provider
text goes (Slack mrkdwn and Block Kit, markdown tables, HTML email, email headers).

Product, brand, template and job names, headlines and provider error messages are *data*: they
must never become markup (a product named `Salt & Pepper <!channel>` must not ping a channel),
never exceed a medium's limit (Slack rejects a whole message when one text object is too long)
and never break the structure around them (a `|` in a markdown table cell, CR/LF in a header).
Every function here is pure and total: any string in, a safe string out.
"""

from __future__ import annotations

import html
import re

ELLIPSIS = "…"

# --- Slack (https://docs.slack.dev/messaging/formatting-message-text, Block Kit reference) ----

#: Block Kit limits, in characters.
SLACK_HEADER_MAX = 150
SLACK_SECTION_TEXT_MAX = 3000
SLACK_CONTEXT_TEXT_MAX = 3000
SLACK_CONTEXT_ELEMENTS_MAX = 10
SLACK_IMAGE_ALT_TEXT_MAX = 2000
SLACK_IMAGE_TITLE_MAX = 2000
SLACK_IMAGE_URL_MAX = 3000
#: The top-level `text` (notification fallback): Slack truncates past 40,000; a fallback is a
#: one-liner, so it is kept far below that.
SLACK_TEXT_MAX = 4000
#: Image types Slack renders in an image block; anything else makes Slack reject the message.
SLACK_IMAGE_CONTENT_TYPES = frozenset({"image/png", "image/jpeg", "image/jpg", "image/gif"})
SLACK_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif")

_ENTITY_TAIL = re.compile(r"&[a-z]{0,4}$")


def slack_escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as control characters.

    `&` → `&amp;`, `<` → `&lt;`, `>` → `&gt;`: afterwards no `<!channel>`, `<@U123>` or
    `<url|label>` in the input can become a mention or a link.
    """
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, ending in `…` when cut."""
    text = str(text)
    if limit <= 0:
        return ""
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def clip_escaped(escaped: str, limit: int) -> str:
    """Like `clip`, for text already escaped for Slack: never cuts an `&amp;`-style entity."""
    if len(escaped) <= limit:
        return escaped
    head = escaped[: max(limit - 1, 0)]
    head = _ENTITY_TAIL.sub("", head)  # a cut entity would show as raw "&am"
    return head + ELLIPSIS if limit > 0 else ""


def slack_mrkdwn(text: str, limit: int = SLACK_SECTION_TEXT_MAX) -> str:
    """User text for a Slack `mrkdwn` text object (or the top-level `text`): escaped, bounded."""
    return clip_escaped(slack_escape(text), limit)


def slack_plain(text: str, limit: int) -> str:
    """User text for a Slack `plain_text` object (header, image title): bounded, one line.

    Slack shows plain text literally (no mentions, no links), so it is not escaped; newlines are
    folded because a header is one line.
    """
    return clip(single_line(text), limit)


def slack_text_fallback(text: str) -> str:
    """The message's top-level `text`: mrkdwn-parsed by Slack (and shown in notifications)."""
    return slack_mrkdwn(single_line(text), SLACK_TEXT_MAX)


def slack_shows_image(content_type: str | None, url: str | None) -> bool:
    """True when Slack can render the image at `url` in an image block.

    Slack renders PNG, JPEG and GIF only; a WebP, SVG or unknown type in an image block gets the
    whole message rejected, so such an ad is listed by file name instead.
    """
    if not url or len(url) > SLACK_IMAGE_URL_MAX:
        return False
    if content_type:
        return content_type.split(";")[0].strip().lower() in SLACK_IMAGE_CONTENT_TYPES
    return url.split("?")[0].lower().endswith(SLACK_IMAGE_SUFFIXES)


# --- markdown tables (Prefect artifacts) ------------------------------------------------------

MARKDOWN_CELL_MAX = 500


def markdown_cell(text: str, limit: int = MARKDOWN_CELL_MAX) -> str:
    """Text for one cell of a GitHub-flavoured markdown table (HTML allowed, as in Prefect).

    HTML-escaped (no markup from data), `|` escaped (it would start a new column), newlines as
    `<br>` (a raw newline ends the row), bounded to `limit` characters of input.
    """
    text = clip(str(text), limit)
    escaped = html.escape(text, quote=True).replace("|", "\\|")
    return re.sub(r"\r\n|\r|\n", "<br>", escaped)


def markdown_code_cell(text: str, limit: int = MARKDOWN_CELL_MAX) -> str:
    """Text as inline code in a table cell: one line, `|` escaped, a fence longer than any run
    of backticks inside (so a backtick in a name cannot end the code span)."""
    text = single_line(clip(str(text), limit))
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if longest else ""
    return f"{fence}{pad}{text.replace('|', chr(92) + '|')}{pad}{fence}"


def markdown_heading_text(text: str, limit: int = MARKDOWN_CELL_MAX) -> str:
    """Text inside a markdown heading: one line, HTML-escaped, bounded."""
    return html.escape(single_line(clip(str(text), limit)), quote=True)


# --- email ---------------------------------------------------------------------------------------

#: Subjects longer than this are cut (RFC 5322 allows 998 per line; mail clients show far less).
EMAIL_SUBJECT_MAX = 250


def html_text(text: str) -> str:
    """Text for HTML element content or a quoted attribute value (`&<>"'` escaped)."""
    return html.escape(str(text), quote=True)


def single_line(text: str) -> str:
    """Every control character (CR, LF, TAB, NUL, …) and run of whitespace as one space."""
    cleaned = re.sub(r"[\x00-\x1f\x7f\u2028\u2029\x85]+", " ", str(text))
    return re.sub(r"\s{2,}", " ", cleaned).strip()


def email_header(text: str, limit: int = EMAIL_SUBJECT_MAX) -> str:
    """A header value (e.g. the subject): one line — no CR/LF can start a new header — bounded."""
    return clip(single_line(text), limit)
