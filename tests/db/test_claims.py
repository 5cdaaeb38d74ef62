"""Template claims on both databases: unused selection, exhaustion policies, atomicity."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import sqlalchemy as sa

from db.errors import NotFoundError, TemplatesExhaustedError
from db.models import ProductTemplateUsage
from db.queries.templates import (
    claim_specific_templates,
    claim_unused_templates,
    confirm_template_use,
    confirm_template_uses,
    release_claims,
)
from db.session import session_scope
from tests.support.factories import make_ad_run, make_product, make_templates


async def _setup(db_url: str, tenant_id: uuid.UUID, templates: int):
    async with session_scope(db_url) as s:
        product = await make_product(s, tenant_id)
        await make_templates(s, tenant_id, templates)
    return product


async def _claim(db_url, tenant_id, product, count, policy="recycle", run=None):
    run = run or uuid.uuid4()
    async with session_scope(db_url) as s:
        result = await claim_unused_templates(
            s,
            tenant_id=tenant_id,
            product_id=product.id,
            flow_run_id=run,
            count=count,
            when_exhausted=policy,
        )
    return run, result


async def _confirm(db_url, tenant_id, product, run, names):
    async with session_scope(db_url) as s:
        for name in names:
            ad_run = await make_ad_run(s, tenant_id, product, name)
            await confirm_template_use(
                s,
                tenant_id=tenant_id,
                product_id=product.id,
                template=name,
                ad_run_id=ad_run.id,
                flow_run_id=run,
            )


async def test_claim_takes_unused_templates_then_rotates(db_url, tenant_id) -> None:
    product = await _setup(db_url, tenant_id, 5)
    run, first = await _claim(db_url, tenant_id, product, 3)
    assert first.templates == ["tpl-0000.png", "tpl-0001.png", "tpl-0002.png"]
    assert first.recycled == []
    await _confirm(db_url, tenant_id, product, run, first.templates)
    _, second = await _claim(db_url, tenant_id, product, 3, policy="skip")
    assert second.templates == ["tpl-0003.png", "tpl-0004.png"]


async def test_concurrent_claims_never_share_a_template(db_url, tenant_id) -> None:
    product = await _setup(db_url, tenant_id, 12)
    results = await asyncio.gather(*[_claim(db_url, tenant_id, product, 3) for _ in range(4)])
    taken = [t for _, r in results for t in r.templates]
    assert len(taken) == 12 and len(set(taken)) == 12


async def test_exhausted_policies(db_url, tenant_id) -> None:
    product = await _setup(db_url, tenant_id, 3)
    run, first = await _claim(db_url, tenant_id, product, 3)
    await _confirm(db_url, tenant_id, product, run, first.templates)

    _, skipped = await _claim(db_url, tenant_id, product, 2, policy="skip")
    assert skipped.templates == []
    with pytest.raises(TemplatesExhaustedError, match="policy is 'fail'"):
        await _claim(db_url, tenant_id, product, 2, policy="fail")

    # Recycle: least recently used first; a recycled claim is exclusive too.
    run2, recycled = await _claim(db_url, tenant_id, product, 2, policy="recycle")
    assert recycled.recycled == recycled.templates and len(recycled.templates) == 2
    _, other = await _claim(db_url, tenant_id, product, 3, policy="recycle")
    assert set(other.templates).isdisjoint(recycled.templates)
    assert len(other.templates) == 1


async def test_release_returns_fresh_templates_to_unused(db_url, tenant_id) -> None:
    product = await _setup(db_url, tenant_id, 3)
    run, claim = await _claim(db_url, tenant_id, product, 3)
    await _confirm(db_url, tenant_id, product, run, claim.templates[:1])
    async with session_scope(db_url) as s:
        released = await release_claims(s, flow_run_id=run)
    assert released == claim.templates[1:]
    async with session_scope(db_url) as s:
        rows = (
            await s.execute(
                sa.select(
                    ProductTemplateUsage.template_storage_name,
                    ProductTemplateUsage.use_count,
                    ProductTemplateUsage.claimed_by_flow_run_id,
                ).where(ProductTemplateUsage.product_id == product.id)
            )
        ).all()
    assert [tuple(r) for r in rows] == [(claim.templates[0], 1, None)]
    _, again = await _claim(db_url, tenant_id, product, 2, policy="skip")
    assert again.templates == claim.templates[1:]


async def test_confirm_is_idempotent_per_ad_run(db_url, tenant_id) -> None:
    product = await _setup(db_url, tenant_id, 1)
    async with session_scope(db_url) as s:
        ad_run = await make_ad_run(s, tenant_id, product, "tpl-0000.png")
        for _ in range(2):
            await confirm_template_use(
                s,
                tenant_id=tenant_id,
                product_id=product.id,
                template="tpl-0000.png",
                ad_run_id=ad_run.id,
            )
        count = await s.scalar(
            sa.select(ProductTemplateUsage.use_count).where(
                ProductTemplateUsage.product_id == product.id
            )
        )
    assert count == 1


async def test_bad_input_raises_clear_errors(db_url, tenant_id) -> None:
    product = await _setup(db_url, tenant_id, 2)
    with pytest.raises(NotFoundError, match="product"):
        await _claim(db_url, uuid.uuid4(), product, 1)  # another tenant's product
    with pytest.raises(ValueError, match="at least 1"):
        await _claim(db_url, tenant_id, product, 0)
    async with session_scope(db_url) as s:
        with pytest.raises(NotFoundError, match="nope.png"):
            await claim_specific_templates(
                s, tenant_id=tenant_id, product_id=product.id, names=["tpl-0000.png", "nope.png"]
            )
    # A template of another tenant is "not found" as well.
    other = uuid.uuid4()
    async with session_scope(db_url) as s:
        await make_templates(s, other, 1, prefix="theirs")
    async with session_scope(db_url) as s:
        with pytest.raises(NotFoundError, match="theirs-0000.png"):
            await claim_specific_templates(
                s, tenant_id=tenant_id, product_id=product.id, names=["theirs-0000.png"]
            )


async def test_set_aside_template_is_not_claimed_until_enabled(db_url, tenant_id) -> None:
    from db.models import AdTemplate
    from db.queries.templates import enable_template, set_template_aside

    product = await _setup(db_url, tenant_id, 3)
    async with session_scope(db_url) as s:
        assert await set_template_aside(
            s, tenant_id=tenant_id, template="tpl-0000.png", reason="its file is missing"
        )
        # Another tenant's template of the same name is not touched, nor found.
        assert not await set_template_aside(
            s, tenant_id=uuid.uuid4(), template="tpl-0000.png", reason="x"
        )
    _run, claim = await _claim(db_url, tenant_id, product, 3, policy="skip")
    assert claim.templates == ["tpl-0001.png", "tpl-0002.png"]
    async with session_scope(db_url) as s:
        row = await s.scalar(
            sa.select(AdTemplate).where(
                AdTemplate.tenant_id == tenant_id, AdTemplate.storage_name == "tpl-0000.png"
            )
        )
        assert row is not None and (row.active, row.inactive_reason) == (
            False,
            "its file is missing",
        )
        assert await enable_template(s, tenant_id=tenant_id, template="tpl-0000.png")
        assert not await enable_template(s, tenant_id=tenant_id, template="tpl-0000.png")
        with pytest.raises(NotFoundError):
            await enable_template(s, tenant_id=tenant_id, template="missing.png")
    _run, claim = await _claim(db_url, tenant_id, product, 1, policy="skip")
    assert claim.templates == ["tpl-0000.png"]


async def test_settling_a_dead_run_fails_its_pending_ad_runs_and_releases_its_claims(
    db_url, tenant_id
) -> None:
    from db.models import AdRun
    from db.queries.ad_runs import flow_runs_with_unfinished_ad_runs, settle_unfinished_ad_runs

    product = await _setup(db_url, tenant_id, 4)
    run, claim = await _claim(db_url, tenant_id, product, 2)
    async with session_scope(db_url) as s:
        done = await make_ad_run(s, tenant_id, product, claim.templates[0], flow_run_id=run)
        await confirm_template_use(
            s,
            tenant_id=tenant_id,
            product_id=product.id,
            template=claim.templates[0],
            ad_run_id=done.id,
            flow_run_id=run,
        )
        pending = await make_ad_run(
            s, tenant_id, product, claim.templates[1], flow_run_id=run, status="pending"
        )
        assert run in await flow_runs_with_unfinished_ad_runs(s)
    async with session_scope(db_url) as s:
        settled = await settle_unfinished_ad_runs(s, flow_run_id=run, reason="the run ended")
    assert settled.failed_ad_runs == [(pending.id, tenant_id)]
    assert settled.released == [claim.templates[1]]
    async with session_scope(db_url) as s:
        statuses = {
            a.id: (a.status, a.error_message)
            for a in (await s.scalars(sa.select(AdRun).where(AdRun.flow_run_id == run))).all()
        }
        usage = (
            await s.scalars(
                sa.select(ProductTemplateUsage).where(ProductTemplateUsage.product_id == product.id)
            )
        ).all()
        assert run not in await flow_runs_with_unfinished_ad_runs(s)
    assert statuses == {done.id: ("completed", None), pending.id: ("failed", "the run ended")}
    assert [(u.template_storage_name, u.use_count, u.claimed_by_flow_run_id) for u in usage] == [
        (claim.templates[0], 1, None)
    ]
    async with session_scope(db_url) as s:  # idempotent
        assert not await settle_unfinished_ad_runs(s, flow_run_id=run, reason="again")


async def test_confirming_a_batch_counts_each_ad_run_once(db_url, tenant_id) -> None:
    """One statement for a batch of ad runs: each confirmed once (the same batch again: no
    change), a template listed twice counts twice, and the batch's claims are cleared."""
    product = await _setup(db_url, tenant_id, 3)
    run, claim = await _claim(db_url, tenant_id, product, 3)
    async with session_scope(db_url) as s:
        ad_runs = [await make_ad_run(s, tenant_id, product, name) for name in claim.templates]
        again = await make_ad_run(s, tenant_id, product, claim.templates[0])
        more = [await make_ad_run(s, tenant_id, product, claim.templates[1]) for _ in range(2)]

    async def confirm(uses: list[tuple[str, uuid.UUID]]) -> dict[str, int]:
        async with session_scope(db_url) as s:
            await confirm_template_uses(
                s, tenant_id=tenant_id, product_id=product.id, uses=uses, flow_run_id=run
            )
        async with session_scope(db_url) as s:
            rows = (
                await s.scalars(
                    sa.select(ProductTemplateUsage).where(
                        ProductTemplateUsage.product_id == product.id
                    )
                )
            ).all()
        assert all(r.claimed_by_flow_run_id is None for r in rows)
        return {r.template_storage_name: r.use_count for r in rows}

    batch = [(a.template_storage_name, a.id) for a in ad_runs]
    assert await confirm(batch) == dict.fromkeys(claim.templates, 1)
    assert await confirm(batch) == dict.fromkeys(claim.templates, 1)
    twice = [
        (again.template_storage_name, again.id),
        *((m.template_storage_name, m.id) for m in more),
    ]
    assert await confirm(twice) == {
        claim.templates[0]: 2,
        claim.templates[1]: 3,
        claim.templates[2]: 1,
    }
