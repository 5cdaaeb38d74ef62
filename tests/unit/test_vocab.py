"""The vocabularies are defined once and the schema's CHECK constraints are generated from them,
with SQL text identical to what the migrations wrote (no database: the models and the migration
sources are compared as text)."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import sqlalchemy as sa

from db.models import Base
from domain import vocab
from domain.spec import JobSpec, UnusedTemplates

MIGRATIONS = Path(__file__).resolve().parents[2] / "db" / "migrations" / "versions"


def _model_checks() -> dict[str, str]:
    checks = {}
    for table in Base.metadata.sorted_tables:
        for constraint in table.constraints:
            if isinstance(constraint, sa.CheckConstraint):
                checks[str(constraint.name)] = str(constraint.sqltext)
    return checks


def test_every_generated_check_is_spelled_as_a_migration_wrote_it() -> None:
    migrations = "\n".join(p.read_text() for p in sorted(MIGRATIONS.glob("*.py")))
    checks = _model_checks()
    assert checks["ck_scheduled_jobs_status"] == "status IN ('active', 'paused', 'completed')"
    for name, sql in checks.items():
        assert f'"{sql}"' in migrations, f"{name}: {sql!r} is not in any migration"


def test_checks_allow_exactly_the_vocabularies() -> None:
    checks = _model_checks()
    for name, values in [
        ("ck_scheduled_jobs_status", vocab.JOB_STATUSES),
        ("ck_scheduled_jobs_template_mode", vocab.TEMPLATE_MODES),
        ("ck_scheduled_jobs_exhausted_policy", vocab.EXHAUSTED_POLICIES),
        ("ck_scheduled_jobs_overlap_policy", vocab.OVERLAP_POLICIES),
        ("ck_scheduled_job_runs_status", vocab.RUN_STATUSES),
        ("ck_scheduled_job_runs_trigger", vocab.RUN_TRIGGERS),
        ("ck_ad_runs_status", vocab.AD_RUN_STATUSES),
        ("ck_export_deliveries_channel", vocab.EXPORT_CHANNELS),
        ("ck_export_deliveries_status", vocab.DELIVERY_STATUSES),
    ]:
        assert checks[name].endswith("IN (" + ", ".join(f"'{v}'" for v in values) + ")")


def test_subsets_are_drawn_from_their_vocabulary() -> None:
    assert vocab.RUN_STATUSES[:4] == vocab.SEED_RUN_STATUSES
    non_terminal = {"pending", "running", "awaiting_approval"}  # approval hook
    assert set(vocab.TERMINAL_RUN_STATUSES) | non_terminal == set(vocab.RUN_STATUSES)
    assert set(vocab.UNFINISHED_AD_RUN_STATUSES) < set(vocab.AD_RUN_STATUSES)
    assert set(vocab.EMAIL_DESTINATIONS) | set(vocab.SLACK_DESTINATIONS) < set(vocab.DESTINATIONS)
    assert "unconfirmed" in vocab.DELIVERY_STATUSES


def test_the_spec_speaks_the_vocabulary() -> None:
    fields = JobSpec.model_fields
    assert get_args(fields["overlap"].annotation) == vocab.OVERLAP_POLICIES
    exhausted = UnusedTemplates.model_fields["when_exhausted"].annotation
    assert get_args(exhausted) == vocab.EXHAUSTED_POLICIES
    assert fields["template_concurrency"].default == vocab.DEFAULT_TEMPLATE_CONCURRENCY


def test_an_export_outcome_is_a_delivery_result_or_says_why_nothing_went_out() -> None:
    from flows.exports.records import DeliveryOutcome

    results = set(get_args(vocab.DeliveryResult))
    assert results == set(vocab.DELIVERY_STATUSES) - {"pending"}
    assert set(vocab.EXPORT_OUTCOMES) == results | {"already_sent", "skipped"}
    assert set(vocab.DELIVERY_OUT_STATUSES) < results
    # The exports speak the vocabulary: their outcome's status is `ExportOutcome` itself.
    status = DeliveryOutcome.model_fields["status"].annotation
    assert get_args(status) == vocab.EXPORT_OUTCOMES
