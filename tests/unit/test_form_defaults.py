"""The Prefect UI's job form offers the job spec's own defaults (`scheduler.forms`), not copies."""

from __future__ import annotations

import uuid

from domain.spec import JobSpec
from scheduler.forms import AdForm, ExportForm, JobForm, ScheduleForm, TemplatesForm


def test_an_untouched_form_is_the_spec_with_its_defaults() -> None:
    product_id = uuid.uuid4()
    from_form = JobSpec.parse(JobForm(name="weekly", product="shoe").to_spec(product_id))
    bare = JobSpec.parse(
        {
            "name": "weekly",
            "product_id": product_id,
            # The form's example schedule; everything else is left to the spec.
            "schedule": {"type": "recurring", "cron": ScheduleForm().cron},
        }
    )
    assert from_form == bare


def test_each_part_defaults_to_the_domain_models() -> None:
    spec = JobSpec.parse(
        {
            "name": "x",
            "product_id": uuid.uuid4(),
            "schedule": {"type": "recurring", "cron": "0 9 * * 1"},
        }
    )
    ad, export = AdForm(), ExportForm()
    assert (ad.variations, ad.content_source, ad.color_mode, ad.image_mode) == (
        spec.ad.variations,
        spec.ad.content_source,
        spec.ad.color_mode,
        spec.ad.image_mode,
    )
    assert (export.destination, export.email_mode) == (
        spec.export.destination,
        spec.export.email_mode,
    )
    templates = TemplatesForm().to_spec()
    assert templates == spec.templates.model_dump()
    schedule = ScheduleForm()
    assert (schedule.timezone, schedule.jitter_seconds) == (
        spec.schedule.timezone,
        getattr(spec.schedule, "jitter_seconds", None),
    )
    form = JobForm(name="x", product="p")
    assert (form.overlap, form.template_concurrency, form.misfire_grace_seconds) == (
        spec.overlap,
        spec.template_concurrency,
        spec.misfire_grace_seconds,
    )
