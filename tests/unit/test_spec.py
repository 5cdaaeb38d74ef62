"""The job spec and the stored parameters, pure: bad input names the field and what is allowed,
the export spec and the export settings share one set of rules, secrets stay out."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from domain.errors import AdSchedulerError, InvalidJobSpec
from domain.params import MAX_RECIPIENTS, ExportSettings, JobParameters
from domain.spec import ExportSpec, JobSpec
from domain.vocab import DEFAULT_TEMPLATE_CONCURRENCY

SLACK = "https://hooks.slack.com/services/T000/B000/abcd1234secret"


def _spec(**over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "weekly",
        "product_id": str(uuid.uuid4()),
        "schedule": {"type": "recurring", "cron": "0 9 * * 1", "timezone": "America/New_York"},
    }
    spec.update(over)
    return spec


def _problems(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(InvalidJobSpec) as info:
        JobSpec.parse(data)
    assert isinstance(info.value, AdSchedulerError)
    return {p.field: p.message for p in info.value.problems}


def test_a_good_spec_parses_with_its_defaults() -> None:
    spec = JobSpec.parse(_spec())
    assert spec.template_concurrency == DEFAULT_TEMPLATE_CONCURRENCY
    assert spec.overlap == "skip" and spec.templates.mode == "unused"
    assert spec.job_parameters(None) == JobParameters()


@pytest.mark.parametrize(
    ("over", "field", "says"),
    [
        ({"schedule": {"type": "recurring", "cron": "99 9 * * *"}}, "schedule.cron", "allowed"),
        (
            {"schedule": {"type": "recurring", "cron": "0 9 * * *", "timezone": "Mars/Base"}},
            "schedule.timezone",
            "allowed",
        ),
        (
            {"schedule": {"type": "one_time", "at": "2001-01-01T09:00:00+00:00"}},
            "schedule.at",
            "in the past",
        ),
        ({"max_runs": 0}, "max_runs", "greater than or equal to 1"),
        ({"templates": {"mode": "unused", "count": 0}}, "templates.count", "greater than"),
        (
            {"templates": {"mode": "unused", "when_exhausted": "panic"}},
            "templates.when_exhausted",
            "'recycle', 'skip' or 'fail'",
        ),
        ({"overlap": "both"}, "overlap", "'skip' or 'queue'"),
        ({"template_concurrency": 33}, "template_concurrency", "less than or equal to 32"),
        ({"misfire_grace_seconds": 30}, "misfire_grace_seconds", "allowed: 0"),
        ({"ad": {"variations": 11}}, "ad.variations", "less than or equal to 10"),
        ({"ad": {"image_mode": "specific"}}, "ad", "needs product_image"),
        ({"colour": "red"}, "colour", "Extra inputs are not permitted"),
        (
            {"export": {"destination": "email", "email_block": "resend"}},
            "export",
            "at least one address",
        ),
        (
            {"export": {"destination": "email", "email_recipients": ["a@example.com", "nope"]}},
            "export.email_recipients.1",
            "name@example.com",
        ),
        (
            {"export": {"destination": "slack"}},
            "export",
            "slack_webhook_url (https://hooks.slack.com/...) or slack_webhook_block",
        ),
    ],
)
def test_bad_input_names_the_field_and_what_is_allowed(
    over: dict[str, Any], field: str, says: str
) -> None:
    problems = _problems(_spec(**over))
    assert field in problems, problems
    assert says in problems[field]


def test_a_one_time_job_runs_once() -> None:
    at = "2099-01-01T09:00:00+00:00"
    problems = _problems(_spec(schedule={"type": "one_time", "at": at}, max_runs=2))
    assert problems == {"max_runs": "a one-time job runs once; allowed: empty or 1"}


@pytest.mark.parametrize(
    "url", ["https://example.com/services/T/B/X", SLACK + " x", SLACK + "\u00e9"]
)
def test_a_bad_webhook_url_is_refused_without_echoing_it(url: str) -> None:
    export = {"destination": "slack", "slack_webhook_url": url}
    with pytest.raises(InvalidJobSpec) as info:
        JobSpec.parse(_spec(export=export))
    assert "export.slack_webhook_url" in info.value.fields
    assert url.strip() not in str(info.value)


# --- one set of export rules -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("export", "says"),
    [
        ({"destination": "email", "email_block": "resend"}, "at least one address"),
        ({"destination": "both", "email_recipients": ["a@example.com"]}, "needs email_block"),
        ({"destination": "email", "email_block": "Bad Name!", "email_recipients": ["a@x.io"]}, ""),
        (
            {
                "destination": "email",
                "email_block": "resend",
                "email_recipients": [f"p{i}@example.com" for i in range(MAX_RECIPIENTS + 1)],
            },
            f"allowed: at most {MAX_RECIPIENTS}",
        ),
        ({"destination": "fax"}, "'none', 'email', 'slack' or 'both'"),
        ({"email_mode": "weekly"}, "'per_ad_run' or 'digest'"),
    ],
)
def test_settings_and_spec_refuse_the_same_input_alike(export: dict[str, Any], says: str) -> None:
    messages = []
    for model in (ExportSettings, ExportSpec):
        with pytest.raises(ValidationError) as info:
            model.model_validate(export)
        messages.append([(e["loc"], e["msg"]) for e in info.value.errors()])
    assert messages[0] == messages[1]
    assert says in str(messages[0])


def test_recipients_are_stored_lower_cased_once_by_both() -> None:
    export = {
        "destination": "email",
        "email_block": "resend",
        "email_recipients": ["Team@Example.com", "team@example.com", "b@example.com"],
    }
    assert ExportSettings.model_validate(export).email_recipients == [
        "team@example.com",
        "b@example.com",
    ]
    assert ExportSpec.model_validate(export).email_recipients == [
        "team@example.com",
        "b@example.com",
    ]


def test_the_stored_settings_need_a_block_and_never_hold_the_url() -> None:
    with pytest.raises(ValidationError, match="slack_webhook_block"):
        ExportSettings.model_validate({"destination": "slack"})
    with pytest.raises(ValidationError, match="Extra inputs"):
        ExportSettings.model_validate({"destination": "slack", "slack_webhook_url": SLACK})
    spec = ExportSpec.model_validate({"destination": "slack", "slack_webhook_url": SLACK})
    settings = spec.to_settings("ad-slack-weekly")
    assert settings.slack_webhook_block == "ad-slack-weekly" and settings.wants_slack
    assert SLACK not in JobParameters(export=settings).model_dump_json()
    # The spec (which may carry the URL) is not accepted where settings are stored.
    with pytest.raises(ValidationError):
        JobParameters.model_validate({"export": spec})


def test_settings_without_slack_keep_a_named_block() -> None:
    spec = ExportSpec.model_validate({"destination": "none", "slack_webhook_block": "kept"})
    assert spec.to_settings("ignored").slack_webhook_block == "kept"
