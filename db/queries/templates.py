"""Template claims: which templates a run may use, held atomically until it confirms or releases.

A claim is a `product_template_usage` row owned by one flow run (`claimed_by_flow_run_id`):
- claiming a never-used template inserts a row with `use_count = 0` and no `used_at`; the unique
  (product, template) key makes two concurrent claimers collide on the insert, and
  `ON CONFLICT DO NOTHING` turns the loser's insert into "take another one" — so two runs for the
  same product in flight at once never get the same unused template, on PostgreSQL (READ
  COMMITTED: the second insert waits for the first transaction, then skips) and on SQLite (writers
  are serialised by `BEGIN IMMEDIATE`);
- claiming a recycled (least-recently-used) template marks its existing row, `FOR UPDATE SKIP
  LOCKED` on PostgreSQL so concurrent recyclers pass each other by;
- confirming records the use (`use_count + 1`, `used_at`, `ad_run_id`) and drops the claim;
- releasing deletes a never-used claim (the template is unused again) or just drops the claim.

On PostgreSQL a claim round is one `INSERT … SELECT … ON CONFLICT DO NOTHING RETURNING`
statement (pick and take in one round trip); elsewhere it is a SELECT then an INSERT.

The unused-template scan walks one tenant's catalog in storage-name order through the
(tenant_id, storage_name) unique index and probes the (product_id, template_storage_name) unique
index for each, stopping after `count` hits: its cost grows with how many of the first templates
the product has used, not with the catalog's size.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from db.errors import NotFoundError, TemplatesExhaustedError
from db.models import AdTemplate, Product, ProductTemplateUsage
from db.queries import dialect_insert
from db.types import UTCDateTime, utcnow
from domain.vocab import ExhaustedPolicy

#: Rounds of "pick candidates, insert, see who won" before giving up on a contended claim.
MAX_CLAIM_ROUNDS = 50


@dataclass(frozen=True)
class ClaimResult:
    """Templates claimed for one run.

    Attributes:
        templates: Storage names claimed, fresh (never used) first, then recycled.
        recycled: The subset that had been used before (least-recently-used first).
    """

    templates: list[str]
    recycled: list[str] = field(default_factory=list)

    @property
    def fresh(self) -> list[str]:
        """The claimed templates this product had never used."""
        return [t for t in self.templates if t not in set(self.recycled)]


async def get_product(
    session: AsyncSession, tenant_id: uuid.UUID, product_id: uuid.UUID
) -> Product:
    """The tenant's product, or NotFoundError (another tenant's product is not found either)."""
    product = await session.scalar(
        sa.select(Product).where(Product.id == product_id, Product.tenant_id == tenant_id)
    )
    if product is None:
        raise NotFoundError("product", product_id)
    return product


def unused_templates_query(
    tenant_id: uuid.UUID, product_id: uuid.UUID, brand_id: uuid.UUID | None, limit: int | None
) -> sa.Select[str]:
    """Active library templates (global or of the product's brand) the product never used
    (`limit` None: all of them)."""
    used = sa.exists().where(
        ProductTemplateUsage.product_id == product_id,
        ProductTemplateUsage.template_storage_name == AdTemplate.storage_name,
    )
    brand_scope: sa.ColumnElement[bool] = AdTemplate.brand_id.is_(None)
    if brand_id is not None:
        brand_scope = sa.or_(brand_scope, AdTemplate.brand_id == brand_id)
    return (
        sa.select(AdTemplate.storage_name)
        .where(
            AdTemplate.tenant_id == tenant_id,
            AdTemplate.active.is_(True),
            AdTemplate.source == "library",
            brand_scope,
            ~used,
        )
        .order_by(AdTemplate.storage_name)
        .limit(limit)
    )


async def claim_unused_templates(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    product_id: uuid.UUID,
    flow_run_id: uuid.UUID,
    count: int,
    when_exhausted: ExhaustedPolicy = "recycle",
) -> ClaimResult:
    """Claim up to `count` templates the product never used, for the run `flow_run_id`.

    When fewer than `count` unused templates are left, `when_exhausted` decides: `recycle` fills
    the rest with the least-recently-used templates not held by another run; `skip` goes on with
    what was found (an empty result means "skip this run"); `fail` raises when none is left.

    Raises:
        ValueError: `count` < 1.
        NotFoundError: The product does not exist for this tenant.
        TemplatesExhaustedError: No unused template is left and the policy is `fail`.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    now = utcnow()
    postgres = session.get_bind().dialect.name == "postgresql"
    # PostgreSQL: one INSERT … SELECT per round (the claim's hot path is one statement). The
    # product's existence is only looked up when that comes back short: an empty result is
    # either "no product" (an error) or "no unused template left" (the policy decides).
    product = None if postgres else await get_product(session, tenant_id, product_id)
    claimed: list[str] = []
    # Concurrent claimers of one product pass over the templates another claim in flight has
    # locked (`_claim_round_postgres`), so each wins its first round. A round that wins nothing
    # while unused templates are left only met locked ones: the next rounds wait for those
    # claims to end instead (one may yet fail and leave its templates unused).
    skip_locked = True
    for _ in range(MAX_CLAIM_ROUNDS):
        need = count - len(claimed)
        if need == 0:
            break
        if postgres:
            won = await _claim_round_postgres(
                session,
                tenant_id=tenant_id,
                product_id=product_id,
                flow_run_id=flow_run_id,
                need=need,
                now=now,
                skip_locked=skip_locked,
            )
            skip_locked = skip_locked and bool(won)
        else:
            assert product is not None
            won = await _claim_round(
                session,
                tenant_id=tenant_id,
                product_id=product_id,
                brand_id=product.brand_id,
                flow_run_id=flow_run_id,
                need=need,
                now=now,
            )
        if won is None:
            break
        claimed.extend(won)
    if product is None and len(claimed) < count:
        product = await get_product(session, tenant_id, product_id)
    fresh = claimed
    if len(fresh) == count or when_exhausted == "skip":
        return ClaimResult(templates=fresh)
    if when_exhausted == "fail":
        if not fresh:
            raise TemplatesExhaustedError(
                f"product {product_id} has used every active template and the job's policy "
                "is 'fail' (choose 'recycle' or 'skip', or add templates)"
            )
        return ClaimResult(templates=fresh)
    assert product is not None
    recycled = await _claim_least_recently_used(
        session,
        product_id=product_id,
        tenant_id=tenant_id,
        brand_id=product.brand_id,
        flow_run_id=flow_run_id,
        count=count - len(fresh),
        now=now,
    )
    return ClaimResult(templates=fresh + recycled, recycled=recycled)


_CLAIM_COLUMNS = [
    "id",
    "product_id",
    "template_storage_name",
    "tenant_id",
    "used_at",
    "use_count",
    "claimed_by_flow_run_id",
    "claimed_at",
]


async def _claim_round_postgres(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    product_id: uuid.UUID,
    flow_run_id: uuid.UUID,
    need: int,
    now: datetime,
    skip_locked: bool,
) -> list[str] | None:
    """One round on PostgreSQL: pick and insert in one statement; None when nothing was left.

    `skip_locked`: the pick locks its templates' rows (`FOR NO KEY UPDATE`, which foreign-key
    checks do not wait for) until the claim's transaction ends, and passes over rows another
    claim holds. Without it, claimers of one product that start together all pick the same first
    unused template: each loser waits for the winner's commit (`ON CONFLICT` waits on an insert
    in flight), then picks again — twelve at once made ~87 statements for 12 claims, and a
    convoy. The lock is per template, not per product: a claim of another product in flight
    may make a claimer take its next template instead; the order is a preference, not a rule.
    """
    product = Product
    used = sa.exists().where(
        ProductTemplateUsage.product_id == product_id,
        ProductTemplateUsage.template_storage_name == AdTemplate.storage_name,
    )
    pick = (
        sa.select(
            sa.func.gen_random_uuid(),
            product.id,
            AdTemplate.storage_name,
            AdTemplate.tenant_id,
            sa.null(),
            sa.literal(0),
            sa.literal(flow_run_id, sa.Uuid()),
            sa.literal(now, UTCDateTime()),
        )
        .select_from(AdTemplate)
        .join(product, sa.and_(product.id == product_id, product.tenant_id == tenant_id))
        .where(
            AdTemplate.tenant_id == tenant_id,
            AdTemplate.active.is_(True),
            AdTemplate.source == "library",
            sa.or_(AdTemplate.brand_id.is_(None), AdTemplate.brand_id == product.brand_id),
            ~used,
        )
        .order_by(AdTemplate.storage_name)
        .limit(need)
    )
    if skip_locked:
        pick = pick.with_for_update(of=AdTemplate, key_share=True, skip_locked=True)
    stmt = (
        postgresql.insert(ProductTemplateUsage)
        .from_select(_CLAIM_COLUMNS, pick)
        .on_conflict_do_nothing(index_elements=["product_id", "template_storage_name"])
        .returning(ProductTemplateUsage.template_storage_name)
    )
    won = sorted((await session.scalars(stmt)).all())
    if won:
        return won
    # Nothing inserted: no such product (NotFoundError), nothing left (None), or every pick
    # lost a race to a concurrent claimer ([]: go another round).
    owner = await get_product(session, tenant_id, product_id)
    left = await session.scalar(unused_templates_query(tenant_id, product_id, owner.brand_id, 1))
    return [] if left is not None else None


async def _claim_round(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    product_id: uuid.UUID,
    brand_id: uuid.UUID | None,
    flow_run_id: uuid.UUID,
    need: int,
    now: datetime,
) -> list[str] | None:
    """One round elsewhere (SQLite): pick, then insert; None when nothing was left."""
    candidates = list(
        (await session.scalars(unused_templates_query(tenant_id, product_id, brand_id, need))).all()
    )
    if not candidates:
        return None
    stmt = (
        dialect_insert(session)(ProductTemplateUsage)
        .values(
            [
                {
                    "id": uuid.uuid4(),
                    "product_id": product_id,
                    "template_storage_name": name,
                    "tenant_id": tenant_id,
                    "used_at": None,
                    "use_count": 0,
                    "claimed_by_flow_run_id": flow_run_id,
                    "claimed_at": now,
                }
                for name in candidates
            ]
        )
        .on_conflict_do_nothing(index_elements=["product_id", "template_storage_name"])
        .returning(ProductTemplateUsage.template_storage_name)
    )
    won = set((await session.scalars(stmt)).all())
    # Keep the scan's order: callers and tests see templates in catalog order.
    return [name for name in candidates if name in won]


async def _claim_least_recently_used(
    session: AsyncSession,
    *,
    product_id: uuid.UUID,
    tenant_id: uuid.UUID,
    brand_id: uuid.UUID | None,
    flow_run_id: uuid.UUID,
    count: int,
    now: object,
) -> list[str]:
    usage = ProductTemplateUsage
    brand_scope: sa.ColumnElement[bool] = AdTemplate.brand_id.is_(None)
    if brand_id is not None:
        brand_scope = sa.or_(brand_scope, AdTemplate.brand_id == brand_id)
    still_in_catalog = sa.exists().where(
        AdTemplate.tenant_id == tenant_id,
        AdTemplate.storage_name == usage.template_storage_name,
        AdTemplate.active.is_(True),
        AdTemplate.source == "library",
        brand_scope,
    )
    pick = (
        sa.select(usage.id)
        .where(
            usage.product_id == product_id,
            usage.use_count > 0,
            usage.claimed_by_flow_run_id.is_(None),
            still_in_catalog,
        )
        .order_by(usage.used_at.asc().nulls_first(), usage.template_storage_name)
        .limit(count)
    )
    if session.get_bind().dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True, of=usage)
    ids = list((await session.scalars(pick)).all())
    if not ids:
        return []
    rows = await session.execute(
        sa.update(usage)
        .where(usage.id.in_(ids), usage.claimed_by_flow_run_id.is_(None))
        .values(claimed_by_flow_run_id=flow_run_id, claimed_at=now)
        .returning(usage.template_storage_name, usage.used_at)
    )
    ordered = sorted(rows.all(), key=lambda r: (r.used_at is not None, r.used_at, r[0]))
    return [str(r.template_storage_name) for r in ordered]


async def claim_specific_templates(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    product_id: uuid.UUID,
    names: Sequence[str],
) -> list[str]:
    """Check that every listed template exists for the tenant; returns them in the given order.

    Specific and uploaded templates are not exclusive (the job asked for them by name), so no
    claim is held; `confirm_template_use` records their use like any other.

    Raises:
        NotFoundError: The product, or one of the templates, does not exist for this tenant.
    """
    await get_product(session, tenant_id, product_id)
    wanted = list(dict.fromkeys(names))
    found = set(
        (
            await session.scalars(
                sa.select(AdTemplate.storage_name).where(
                    AdTemplate.tenant_id == tenant_id, AdTemplate.storage_name.in_(wanted)
                )
            )
        ).all()
    )
    missing = [n for n in wanted if n not in found]
    if missing:
        raise NotFoundError("template", ", ".join(missing))
    return wanted


async def confirm_template_use(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    product_id: uuid.UUID,
    template: str,
    ad_run_id: uuid.UUID,
    flow_run_id: uuid.UUID | None = None,
) -> None:
    """Record that `template` was used for `product_id` by the ad run `ad_run_id`.

    Idempotent per ad run: confirming the same ad run twice counts one use.
    """
    await confirm_template_uses(
        session,
        tenant_id=tenant_id,
        product_id=product_id,
        uses=[(template, ad_run_id)],
        flow_run_id=flow_run_id,
    )


async def confirm_template_uses(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    product_id: uuid.UUID,
    uses: Sequence[tuple[str, uuid.UUID]],
    flow_run_id: uuid.UUID | None = None,
) -> None:
    """`confirm_template_use` for several (template, ad run id) pairs: one statement, executed
    for each pair (one round trip), so a batch of ad runs is confirmed at the cost of one.

    A template listed twice (two ad runs of it) counts twice, as two confirmations would.
    """
    usage = cast(sa.Table, ProductTemplateUsage.__table__)
    now = utcnow()
    stmt = dialect_insert(session)(usage)
    mine = usage.c.claimed_by_flow_run_id == flow_run_id if flow_run_id else sa.false()
    stmt = stmt.on_conflict_do_update(
        index_elements=["product_id", "template_storage_name"],
        set_={
            "use_count": usage.c.use_count + 1,
            "used_at": stmt.excluded.used_at,
            "ad_run_id": stmt.excluded.ad_run_id,
            "claimed_by_flow_run_id": sa.case((mine, None), else_=usage.c.claimed_by_flow_run_id),
            "claimed_at": sa.case((mine, None), else_=usage.c.claimed_at),
        },
        where=usage.c.ad_run_id.is_distinct_from(stmt.excluded.ad_run_id),
    )
    # One statement may update a row once: the k-th listing of a template goes in round k.
    rounds: list[list[tuple[str, uuid.UUID]]] = []
    listed: dict[str, int] = {}
    for template, ad_run_id in uses:
        k = listed[template] = listed.get(template, -1) + 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append((template, ad_run_id))
    for now_round in rounds:
        await session.execute(
            stmt,
            [
                {
                    "id": uuid.uuid4(),
                    "product_id": product_id,
                    "template_storage_name": template,
                    "tenant_id": tenant_id,
                    "used_at": now,
                    "ad_run_id": ad_run_id,
                    "use_count": 1,
                    "claimed_by_flow_run_id": None,
                    "claimed_at": None,
                }
                for template, ad_run_id in now_round
            ],
        )


async def release_claims(
    session: AsyncSession, *, flow_run_id: uuid.UUID, templates: Sequence[str] | None = None
) -> list[str]:
    """Release the claims `flow_run_id` holds (all of them, or just `templates`).

    A never-used template becomes unused again; a recycled one keeps its history.
    Returns the storage names released.
    """
    usage = ProductTemplateUsage
    scope = [usage.claimed_by_flow_run_id == flow_run_id]
    if templates is not None:
        scope.append(usage.template_storage_name.in_(list(templates)))
    deleted = await session.scalars(
        sa.delete(usage).where(*scope, usage.use_count == 0).returning(usage.template_storage_name)
    )
    released = list(deleted.all())
    cleared = await session.scalars(
        sa.update(usage)
        .where(*scope, usage.use_count > 0)
        .values(claimed_by_flow_run_id=None, claimed_at=None)
        .returning(usage.template_storage_name)
    )
    released.extend(cleared.all())
    return sorted(released)


async def runs_holding_claims(session: AsyncSession) -> list[uuid.UUID]:
    """Flow runs that currently hold at least one claim (the reconciler checks them)."""
    rows = await session.scalars(
        sa.select(ProductTemplateUsage.claimed_by_flow_run_id)
        .where(ProductTemplateUsage.claimed_by_flow_run_id.is_not(None))
        .distinct()
    )
    return [r for r in rows.all() if r is not None]


async def set_template_aside(
    session: AsyncSession, *, tenant_id: uuid.UUID, template: str, reason: str
) -> bool:
    """Take a template out of rotation after it failed for a reason of its own.

    It becomes inactive with `reason` (shown in the catalog), so no `unused`-mode run claims it
    again until `templates sync` finds its file again or `enable_template` puts it back.
    Returns False when the template is not in the tenant's catalog.
    """
    result = await session.execute(
        sa.update(AdTemplate)
        .where(AdTemplate.tenant_id == tenant_id, AdTemplate.storage_name == template)
        .values(active=False, inactive_reason=reason[:1000], updated_at=utcnow())
    )
    return bool(getattr(result, "rowcount", 0))


async def enable_template(session: AsyncSession, *, tenant_id: uuid.UUID, template: str) -> bool:
    """Put a template back in rotation (active, reason cleared).

    Returns False when it was active already.

    Raises:
        NotFoundError: The tenant has no template of that storage name.
    """
    row = await session.scalar(
        sa.select(AdTemplate)
        .where(AdTemplate.tenant_id == tenant_id, AdTemplate.storage_name == template)
        .with_for_update()
    )
    if row is None:
        raise NotFoundError("template", template)
    if row.active and row.inactive_reason is None:
        return False
    row.active = True
    row.inactive_reason = None
    await session.flush()
    return True
