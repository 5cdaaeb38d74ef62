"""`create_ads`: the manual ad-creation flow (the seed's Ad Creator), on the same tasks.

A person picks a product, templates (or "unused" with a count) and the ad parameters; the run
claims, generates, records template usage and exports exactly as a scheduled run does.
"""

from __future__ import annotations

import uuid

from prefect import flow
from prefect.context import get_run_context
from prefect.states import Failed, State
from pydantic import BaseModel

from domain.params import AdParameters, ExportSettings
from domain.vocab import DEFAULT_TEMPLATE_CONCURRENCY, ExhaustedPolicy
from flows.artifacts import publish_run_artifact
from flows.pipeline import RunPlan, TemplateChoice, make_ads, select_templates


class CreateAdsResult(BaseModel):
    """What a manual run made."""

    ad_run_ids: list[uuid.UUID]
    templates: list[str]
    ads: int


@flow(name="create-ads", log_prints=False)
async def create_ads(  # noqa: PLR0917 - a flow's parameters are its UI form
    tenant_id: uuid.UUID,
    product_id: uuid.UUID,
    templates: list[str] | None = None,
    unused_count: int | None = None,
    when_exhausted: ExhaustedPolicy = "recycle",
    ad: AdParameters | None = None,
    export: ExportSettings | None = None,
    concurrency: int = DEFAULT_TEMPLATE_CONCURRENCY,
) -> CreateAdsResult | State:
    """Make ads for a product now.

    Args:
        tenant_id: The tenant the product belongs to.
        product_id: The product.
        templates: Template storage names to use (or leave empty and give `unused_count`).
        unused_count: Claim this many templates the product has not used yet.
        when_exhausted: With `unused_count`: recycle / skip / fail when none are left.
        ad: Ad parameters (variations, content source, colour mode, image mode).
        export: Where the ads go (default: nowhere).
        concurrency: Templates generated at once.
    """
    flow_run = get_run_context().flow_run  # type: ignore[union-attr]
    assert flow_run is not None
    if not templates and not unused_count:
        return Failed(message="give either templates (storage names) or unused_count (1-100)")
    if unused_count is not None and not 1 <= unused_count <= 100:
        return Failed(message=f"unused_count must be between 1 and 100, got {unused_count}")
    if not 1 <= concurrency <= 32:
        return Failed(message=f"concurrency must be between 1 and 32, got {concurrency}")
    ad = ad or AdParameters()
    opened = await select_templates(
        TemplateChoice(
            tenant_id=tenant_id,
            product_id=product_id,
            flow_run_id=flow_run.id,
            names=templates or None,
            count=unused_count or 1,
            when_exhausted=when_exhausted,
            ad=ad,
        )
    )
    chosen = [ticket.template for ticket in opened]
    if not chosen:
        return Failed(message="no unused template is left for this product")
    plan = RunPlan(
        tenant_id=tenant_id,
        product_id=product_id,
        flow_run_id=flow_run.id,
        templates=chosen,
        opened=opened,
        ad=ad,
        export=export or ExportSettings(),
        concurrency=concurrency,
    )
    result = await make_ads(plan)
    await publish_run_artifact("manual ad creation", result)
    if result.failed:
        return Failed(message=result.failure_message())
    return CreateAdsResult(
        ad_run_ids=result.ad_run_ids,
        templates=chosen,
        ads=sum(len(o.ads) for o in result.outcomes),
    )
