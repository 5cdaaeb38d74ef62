"""The one secret redactor (domain/redact.py)."""

from __future__ import annotations

from domain.redact import MASK, redact, redact_url

KEY = "re_live_0123456789abcdef"
HOOK = "https://hooks.slack.com/services/T000/B000/XyZsecret"


def test_every_given_secret_is_hidden_and_a_webhook_path_too() -> None:
    text = f"key {KEY} failed posting to {HOOK}; server echoed /services/T000/B000/XyZsecret"
    shown = redact(text, [KEY, HOOK, None, ""])
    assert KEY not in shown and HOOK not in shown and "XyZsecret" not in shown
    assert shown.count(MASK) == 3


def test_url_passwords_are_hidden_without_being_named() -> None:
    shown = redact("connect to postgresql+asyncpg://app:s3cr3t@db:5432/ads failed")
    assert shown == "connect to postgresql+asyncpg://app:***@db:5432/ads failed"
    assert redact_url("https://u:p@example.com/x") == "https://u:***@example.com/x"


def test_redaction_comes_before_the_cut_so_no_half_secret_survives() -> None:
    text = "x" * 10 + KEY + "y" * 30
    shown = redact(text, [KEY], limit=20)
    assert shown == "x" * 10 + MASK + "y" * 6 + "…"  # cut first, and "re_live…" would remain


def test_one_line_collapses_whitespace() -> None:
    assert redact("a\n  b\r\nc", one_line=True) == "a b c"


def test_a_secret_containing_another_is_hidden_whole() -> None:
    assert redact("abcdef", ["abc", "abcdef"]) == MASK
