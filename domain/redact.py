"""The project's one secret redactor: text that may reach a person, with its secrets hidden.

Every text that came from outside (a provider's error body, an exception's message) goes
through `redact` before it is logged, stored or raised, with the secrets the caller holds (an
API key, a webhook URL). Passwords written into URLs (`scheme://user:secret@host`) are hidden
whatever the caller passes. Redaction comes before any truncation: a cut could leave half a
secret that no longer matches.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

#: What a secret is replaced with.
MASK = "***"

_URL_PASSWORD = re.compile(r"(\w[\w+.-]*://[^:/@\s]+:)[^@\s]+@")


def _variants(secret: str) -> list[str]:
    """The secret, and for a URL its path too (a server may echo only the path back)."""
    found = [secret]
    if "://" in secret:
        try:
            path = urlsplit(secret).path
        except ValueError:
            path = ""
        if len(path) > 1:
            found.append(path)
    return found


def redact(
    text: str,
    secrets: Iterable[str | None] = (),
    *,
    limit: int | None = None,
    one_line: bool = False,
) -> str:
    """`text` with every secret (and every URL password) replaced by `***`.

    Args:
        text: The text to show.
        secrets: Values to hide (empty and None ones are ignored). A URL secret also hides its
            path (a webhook's path is its secret part).
        limit: Cut the result to at most this many characters (ending in `…`), after redaction.
        one_line: Collapse whitespace (newlines included) to single spaces.

    Returns:
        The redacted text.
    """
    # Longest first, so a secret that contains another is hidden whole.
    hidden = sorted({v for s in secrets if s for v in _variants(s)}, key=len, reverse=True)
    for value in hidden:
        text = text.replace(value, MASK)
    text = _URL_PASSWORD.sub(rf"\1{MASK}@", text)
    if one_line:
        text = " ".join(text.split())
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 1)] + "…"
    return text


def redact_url(text: str) -> str:
    """Text with any password in a URL (`scheme://user:secret@host`) replaced by `***`."""
    return redact(text)
