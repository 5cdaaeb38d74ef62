"""The deployment tag that names a job's generator block (`domain.tags`)."""

from __future__ import annotations

from domain.tags import generator_from_tags, generator_tag


def test_a_generator_tag_round_trips() -> None:
    tag = generator_tag("gemini-image-generator/main")
    assert tag == "generator:gemini-image-generator/main"
    assert generator_from_tags(["ad-scheduler", "job:1", tag]) == "gemini-image-generator/main"


def test_no_tag_an_empty_one_or_two_different_ones_name_nothing() -> None:
    assert generator_from_tags(["ad-scheduler", "job:1"]) is None
    assert generator_from_tags(["generator:"]) is None
    assert generator_from_tags(["generator:a/x", "generator:b/y"]) is None
    assert generator_from_tags(["generator:a/x", "generator:a/x"]) == "a/x"


def test_a_job_deployment_carries_its_generator_tag_only_when_it_names_a_block() -> None:
    import uuid

    from db.models import ScheduledJob
    from domain.params import AdParameters, JobParameters
    from flows.deployment_sync import job_tags

    def job(block: str | None) -> ScheduledJob:
        params = JobParameters(ad=AdParameters(generator_block=block))
        return ScheduledJob(
            id=uuid.uuid4(),
            tenant_id=uuid.uuid4(),
            brand_id=uuid.uuid4(),
            product_id=uuid.uuid4(),
            parameters=params.model_dump(mode="json"),
        )

    assert generator_from_tags(job_tags(job("gemini-image-generator/main"))) == (
        "gemini-image-generator/main"
    )
    assert generator_from_tags(job_tags(job(None))) is None
