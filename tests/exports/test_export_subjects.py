"""The read models behind `ad-scheduler export` and the demo (`db.queries.export_subjects`,
`db.queries.ads`), on the real databases."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from db.models import ExportDelivery
from db.queries.ads import ads_of_job
from db.queries.export_subjects import deliveries_out, find_export_subject
from db.read_models import AdRunView, DeliveryView, JobRunView, JobView
from db.session import session_scope
from tests.exports.conftest import seed_runs

pytestmark = pytest.mark.usefixtures("use_database")


async def test_a_run_id_names_an_ad_run_or_a_job_run_of_the_tenant(
    db_url: str, tenant_id: uuid.UUID, storage_root: Path
) -> None:
    runs = await seed_runs(db_url, tenant_id, storage_root, templates=("a.png", "b.png"), ads=1)
    first = runs[0]
    async with session_scope() as session:
        by_ad_run = await find_export_subject(session, first.ad_run_id, tenant_id)
        by_job_run = await find_export_subject(session, first.job_run_id, tenant_id)
        by_flow_run = await find_export_subject(session, first.flow_run_id, tenant_id)
        other_tenant = await find_export_subject(session, first.ad_run_id, uuid.uuid4())
        unknown = await find_export_subject(session, uuid.uuid4(), tenant_id)

    assert by_ad_run is not None and by_ad_run.job_run is None
    assert isinstance(by_ad_run.ad_run, AdRunView) and by_ad_run.ad_run.id == first.ad_run_id
    assert isinstance(by_ad_run.job, JobView) and by_ad_run.job.id == first.job_id
    for found in (by_job_run, by_flow_run):
        assert found is not None and found.ad_run is None
        assert isinstance(found.job_run, JobRunView) and found.job_run.id == first.job_run_id
        assert found.job is not None and found.job.id == first.job_id
    assert other_tenant is None and unknown is None


async def test_deliveries_out_are_the_sent_and_unconfirmed_of_one_channel(
    db_url: str, tenant_id: uuid.UUID, storage_root: Path
) -> None:
    runs = await seed_runs(db_url, tenant_id, storage_root, templates=("a.png", "b.png"), ads=1)
    a, b = runs
    async with session_scope() as session:
        session.add_all(
            [
                ExportDelivery(
                    tenant_id=tenant_id, ad_run_id=a.ad_run_id, channel="slack", status="sent"
                ),
                ExportDelivery(
                    tenant_id=tenant_id, ad_run_id=b.ad_run_id, channel="slack", status="failed"
                ),
                ExportDelivery(
                    tenant_id=tenant_id, ad_run_id=b.ad_run_id, channel="email", status="pending"
                ),
                ExportDelivery(
                    tenant_id=tenant_id,
                    scheduled_job_run_id=a.job_run_id,
                    channel="email",
                    status="unconfirmed",
                ),
            ]
        )
    ad_runs = [a.ad_run_id, b.ad_run_id]
    async with session_scope() as session:
        slack = await deliveries_out(session, "slack", ad_run_ids=ad_runs, job_run_id=None)
        email = await deliveries_out(session, "email", ad_run_ids=ad_runs, job_run_id=None)
        digest = await deliveries_out(session, "email", ad_run_ids=[], job_run_id=a.job_run_id)

    assert [(d.ad_run_id, d.status) for d in slack] == [(a.ad_run_id, "sent")]
    assert all(isinstance(d, DeliveryView) for d in slack)
    assert email == []  # pending went nowhere yet
    assert [(d.scheduled_job_run_id, d.status) for d in digest] == [(a.job_run_id, "unconfirmed")]


async def test_ads_of_a_job_in_run_then_variation_order(
    db_url: str, tenant_id: uuid.UUID, storage_root: Path
) -> None:
    runs = await seed_runs(db_url, tenant_id, storage_root, templates=("a.png", "b.png"), ads=2)
    async with session_scope() as session:
        made = await ads_of_job(session, runs[0].job_id)
        none = await ads_of_job(session, uuid.uuid4())

    assert {(ad.template_storage_name, ad.storage_path) for ad in made} == {
        (template, path)
        for template, run in zip(("a.png", "b.png"), runs, strict=True)
        for path in run.ad_paths
    }
    for run in runs:  # each run's ads keep their variation order
        mine = [ad.storage_path for ad in made if ad.storage_path in run.ad_paths]
        assert mine == run.ad_paths
    assert none == []
