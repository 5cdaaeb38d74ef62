"""create_ads: the manual Ad Creator flow on the same tasks, recording template usage too."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from blocks.storage import default_storage
from db.models import AdRun, GeneratedAd, ProductTemplateUsage
from db.session import session_scope
from domain.params import AdParameters
from flows.create_ads import create_ads
from flows.sample_data import seed_sample_data

pytestmark = pytest.mark.usefixtures("prefect_api", "use_database", "data_dir")


async def test_manual_run_makes_ads_and_records_usage(tenant_id) -> None:
    _brand, product, _ = await seed_sample_data(tenant_id, default_storage(), templates=4)
    result = await create_ads(
        tenant_id,
        product.id,
        unused_count=2,
        ad=AdParameters(variations=2, content_source="benefits", color_mode="complementary"),
    )
    assert result.templates == ["sample-01.png", "sample-02.png"] and result.ads == 4
    async with session_scope() as s:
        usage = ProductTemplateUsage
        used = set(
            (
                await s.scalars(
                    sa.select(usage.template_storage_name).where(
                        usage.product_id == product.id, usage.use_count > 0
                    )
                )
            ).all()
        )
        headlines = set(
            (
                await s.scalars(
                    sa.select(GeneratedAd.headline)
                    .join(AdRun)
                    .where(AdRun.product_id == product.id)
                )
            ).all()
        )
    assert used == {"sample-01.png", "sample-02.png"}
    assert headlines == {"Trail Runner 2: Grips wet rock", "Trail Runner 2: Weighs 240 g"}

    # A listed template works too; an unknown one fails the run with its name.
    again = await create_ads(tenant_id, product.id, templates=["sample-04.png"])
    assert again.templates == ["sample-04.png"]
    state = await create_ads(tenant_id, product.id, templates=["nope.png"], return_state=True)
    assert state.is_failed() and "nope.png" in (state.message or "")
