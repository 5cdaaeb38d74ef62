"""Exports: the generated ads by email (Resend) and to Slack (incoming webhook).

Modules by concern: `content` (composing the email and the Block Kit messages, pure),
`email` and `slack` (sending with a loaded block), `sending` (limit slots and retries per
request), `records` (delivery bookkeeping: never sent twice), `tasks` (the Prefect tasks and
the entry points for a run's own export and for a re-send).
"""

from __future__ import annotations

from flows.exports.content import AdRunContent, ExportedAd, compose_email, compose_slack_messages
from flows.exports.records import (
    RETRIED_LATER,
    RETRY_EXPORTS_EVERY_MINUTES,
    RETRY_EXPORTS_MAX_ATTEMPTS,
    DeliveryOutcome,
    ExportError,
    failure_lines,
)
from flows.exports.tasks import (
    ExportBlocks,
    RunIdentity,
    ensure_export_limits,
    export_ad_run,
    export_finished_runs,
    export_job_run_digest,
    export_stored_ad_run,
    export_stored_digest,
    open_exports,
    outcomes_of,
    resend_limit_name,
    slack_limit_name,
)

__all__ = [
    "RETRIED_LATER",
    "RETRY_EXPORTS_EVERY_MINUTES",
    "RETRY_EXPORTS_MAX_ATTEMPTS",
    "AdRunContent",
    "DeliveryOutcome",
    "ExportBlocks",
    "ExportError",
    "ExportedAd",
    "RunIdentity",
    "compose_email",
    "compose_slack_messages",
    "ensure_export_limits",
    "export_ad_run",
    "export_finished_runs",
    "export_job_run_digest",
    "export_stored_ad_run",
    "export_stored_digest",
    "failure_lines",
    "open_exports",
    "outcomes_of",
    "resend_limit_name",
    "slack_limit_name",
]
