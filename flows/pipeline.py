"""The tasks both ad flows share, as the design card names them (each run's task list shows them):

- `select-templates`: claim the run's templates and open their ad runs (`select_templates`);
- `generate-ad-run`, one per template, its task run named by the template: N variations made
  and stored (`generate_ad_run`);
- `record-template-usage`, for the ad runs as they finish: the ads, the ad runs' outcomes and
  the templates' usage in one transaction; templates that finish together are recorded together
  (`UsageRecorder`, `record_template_usage`);
- the export tasks (`export_outcomes` hands the finished ad runs to `flows/export`).

`make_ads` is the common core of `run_scheduled_job` and `create_ads`. Templates run
concurrently with an explicit bound (`template_concurrency`); every provider call also holds a slot
of the generator's provider limit, shared by every run on every worker (see `flows/limits.py`).
A template whose generation fails is released (it stays unused); the others finish, and their ads
and usage are recorded whatever happens to the export afterwards.

A template that fails for a reason of its own (its file is missing or is not a readable image,
or the provider permanently rejected the request: `RejectedRequestError`) is *set aside*: made
inactive in the catalog with the reason, so no later run claims it first again, and, when the
run's templates were claimed in `unused` mode, a replacement is claimed so the run still makes
`template_count` ad runs when the catalog has them. Transient failures only release the claim.

Whatever stops a run early (an exception anywhere, even before the first template), its
unfinished ad runs are failed with the reason and its claims released before it re-raises
(`flows/run_recovery.py`), and ad files written without their rows are deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar, cast

import sqlalchemy as sa
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.utilities.annotations import quote
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.ext.asyncio import AsyncSession

from blocks.generators.base import (
    AdGenerator,
    AdRequest,
    GenerationError,
    ProductBrief,
    RejectedRequestError,
)
from blocks.generators.retrying import generate_with_retries
from blocks.registry import GENERATOR_SLUGS, load_block
from blocks.storage import AdStorage
from db.errors import TemplatesExhaustedError
from db.models import AdRun, AdTemplate, GeneratedAd, Product
from db.queries.jobs import product_with_brand
from db.queries.templates import (
    claim_specific_templates,
    claim_unused_templates,
    confirm_template_uses,
    release_claims,
    set_template_aside,
)
from db.session import session_scope
from db.types import utcnow
from domain.params import AdParameters, ExportSettings
from domain.vocab import DEFAULT_TEMPLATE_CONCURRENCY, ExhaustedPolicy
from flows import thumbnails
from flows.limits import ProviderSlots, hand_back_later
from flows.progress import ProgressReporter
from flows.run_recovery import settle_after

T = TypeVar("T")

#: How long a batch of `record-template-usage` waits for ad runs still generating to join it, in
#: seconds (a wave sent together comes back within milliseconds; a slower one is not awaited).
RECORD_GATHER_S = 0.02

#: Generator block types a bare block name is looked up in, in this order.
GENERATOR_BLOCK_SLUGS = GENERATOR_SLUGS


class AdSummary(BaseModel):
    """One stored ad, as flows report it."""

    storage_path: str
    headline: str
    url: str | None = None


class AdRunOutcome(BaseModel):
    """What happened to one template in one run."""

    ad_run_id: uuid.UUID
    template: str
    ok: bool
    ads: list[AdSummary] = Field(default_factory=list)
    error: str | None = None
    #: Set when the template failed for a reason of its own and was taken out of rotation.
    set_aside: str | None = None
    #: The template this one replaced (after that one was set aside), if any.
    replaces: str | None = None


class TemplateChoice(BaseModel):
    """Which templates a run claims: `names` (specific or uploaded), else `count` unused ones;
    and what the ad runs opened for them carry (`ad`, and the job and job run, if any)."""

    tenant_id: uuid.UUID
    product_id: uuid.UUID
    flow_run_id: uuid.UUID
    names: list[str] | None = None
    count: int = Field(default=1, ge=1)
    when_exhausted: ExhaustedPolicy = "recycle"
    ad: AdParameters = Field(default_factory=AdParameters)
    job_id: uuid.UUID | None = None
    job_run_id: uuid.UUID | None = None


class AdRunTicket(BaseModel):
    """One template's ad run, created up front (status pending) with what it needs."""

    ad_run_id: uuid.UUID
    template: str
    width: int = 1080
    height: int = 1080
    copy_text: str = ""


class RunPlan(BaseModel):
    """Everything a run's ad generation needs, resolved up front."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    tenant_id: uuid.UUID
    product_id: uuid.UUID
    flow_run_id: uuid.UUID
    templates: list[str]
    ad: AdParameters
    export: ExportSettings = Field(default_factory=ExportSettings)
    job_id: uuid.UUID | None = None
    job_run_id: uuid.UUID | None = None
    concurrency: int = Field(default=DEFAULT_TEMPLATE_CONCURRENCY, ge=1)
    #: For templates claimed in `unused` mode: claim an unused replacement for each template
    #: set aside (never for `specific` templates, which a person named).
    replace_set_aside: bool = False
    #: The ad runs `select_templates` opened, one per template in order (`make_ads` needs
    #: them; a plan that is only exported, e.g. after an approval, has none).
    opened: list[AdRunTicket] = Field(default_factory=list)

    @model_validator(mode="after")
    def _opened_match_templates(self) -> RunPlan:
        if self.opened and [t.template for t in self.opened] != self.templates:
            raise ValueError("opened ad runs must be the plan's templates, in order")
        return self


class PipelineResult(BaseModel):
    """The outcome of `make_ads`."""

    outcomes: list[AdRunOutcome]
    #: Exports that failed, as "<channel>: <reason>" (never a secret).
    export_failures: list[str] = Field(default_factory=list)

    @property
    def failed(self) -> list[AdRunOutcome]:
        """Ad runs that did not produce their ads."""
        return [o for o in self.outcomes if not o.ok]

    @property
    def succeeded(self) -> list[AdRunOutcome]:
        """Ad runs that produced their ads."""
        return [o for o in self.outcomes if o.ok]

    @property
    def set_aside(self) -> list[AdRunOutcome]:
        """Templates this run took out of rotation (with why)."""
        return [o for o in self.outcomes if o.set_aside]

    def set_aside_message(self) -> str:
        """A sentence naming the templates set aside and why ("" when none)."""
        if not self.set_aside:
            return ""
        parts = [f"{o.template} ({o.set_aside})" for o in self.set_aside]
        return "set aside (re-enable with `ad-scheduler templates enable`): " + "; ".join(parts)

    @property
    def ad_run_ids(self) -> list[uuid.UUID]:
        """Every ad run of this run."""
        return [o.ad_run_id for o in self.outcomes]

    def failure_message(self) -> str:
        """A sentence naming the failed templates and why."""
        parts = [f"{o.template} ({o.error})" for o in self.failed]
        return f"{len(self.failed)} of {len(self.outcomes)} templates failed: " + "; ".join(parts)


async def load_generator(block_name: str | None) -> AdGenerator:
    """The named generator block ("slug/name" or a bare name), or the offline renderer.

    Raises:
        BlockNotFoundError: No generator block of that name is saved (a `ValueError`).
    """
    if not block_name:
        # Imported here: the offline renderer brings Pillow, which a remote generator never needs.
        from blocks.generators.local import LocalAdRenderer

        return LocalAdRenderer()
    # Through the registry: a worker's flow process has not imported the generator classes.
    return await load_block(
        block_name,
        AdGenerator,  # type: ignore[type-abstract]  # a base to check against, not built
        slugs=GENERATOR_BLOCK_SLUGS,
    )


async def load_brief(tenant_id: uuid.UUID, product_id: uuid.UUID) -> tuple[ProductBrief, Product]:
    """The product brief generators see, and the product row, in a transaction of their own."""
    async with session_scope() as session:
        return await read_brief(session, tenant_id, product_id)


async def read_brief(
    session: AsyncSession, tenant_id: uuid.UUID | None, product_id: uuid.UUID
) -> tuple[ProductBrief, Product]:
    """The product brief generators see, and the product row, read in `session`.

    Raises:
        ValueError: The tenant has no such product (the message names the product id).
    """
    # The product and its brand in one round trip.
    found = await product_with_brand(session, tenant_id, product_id)
    if found is None:
        raise ValueError(f"product {product_id} not found")
    product, brand = found
    brief = ProductBrief(
        name=product.name,
        description=product.description,
        brand_name=brand.name,
        key_benefits=tuple(product.key_benefits),
        brand_colors=tuple(product.brand_colors or brand.colors),
        hooks=tuple(product.hooks),
    )
    return brief, product


def _product_image_path(ad: AdParameters, image_paths: list[str], index: int) -> str | None:
    """The image mode: `specific` always uses the given image, `auto` rotates the product's."""
    if ad.image_mode == "specific":
        return ad.product_image
    return image_paths[index % len(image_paths)] if image_paths else None


@dataclass
class RunResources:
    """What every ad run of one flow run shares (loaded once, passed to each task)."""

    brief: ProductBrief
    image_paths: list[str]
    generator: AdGenerator
    storage: AdStorage
    slots: ProviderSlots
    #: Provider requests in flight at once in this run: the explicit bound (never unbounded).
    generating: asyncio.Semaphore
    #: Ad runs open at once (reading templates, writing ads): twice the generation bound, so
    #: the next template's storage and database work overlaps the current generations while
    #: memory stays bounded.
    open_runs: asyncio.Semaphore
    #: The first templates' files, read while the run takes its provider slots (by template;
    #: each taken once by its ad run, see `template_bytes`).
    prefetched: dict[str, asyncio.Future[bytes]] = field(default_factory=dict)
    #: Templates generated so far in this run, and provider rejections set aside so far.
    successes: int = 0
    rejections_set_aside: int = 0
    #: Called once, when the run's first wave of provider requests (`first_wave` of them) holds
    #: its slots (see `make_ads`).
    on_first_wave: Callable[[], None] | None = None
    first_wave: int = 1
    #: Provider requests holding a slot now.
    in_flight: int = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """One provider request's slot (`ProviderSlots.slot`); the request that completes the
        run's first wave also calls `on_first_wave`."""
        async with self.slots.slot():
            self.in_flight += 1
            try:
                if self.on_first_wave is not None and self.in_flight >= self.first_wave:
                    first, self.on_first_wave = self.on_first_wave, None
                    first()
                yield
            finally:
                self.in_flight -= 1

    async def template_bytes(self, template: str) -> bytes:
        """The template's file, checked to be a readable image (see `read_template`)."""
        early = self.prefetched.pop(template, None)
        return await (early if early is not None else read_template(self.storage, template))

    def note_success(self) -> None:
        """Record that a template of this run was generated."""
        self.successes += 1

    def may_set_aside(self, exc: BaseException) -> bool:
        """Whether a template-specific failure may take its template out of rotation.

        A missing or unreadable file always does. A provider rejection can also come from the
        request's settings or the product image, which every template shares: the first one is
        set aside, further ones only while some template of this run did succeed — so one bad
        setting never empties the catalog.
        """
        if not isinstance(exc, RejectedRequestError):
            return True
        if self.rejections_set_aside and not self.successes:
            return False
        self.rejections_set_aside += 1
        return True


class _AdRunSource(Protocol):
    """What an ad run's row takes from its run (a `TemplateChoice` or a `RunPlan`)."""

    tenant_id: uuid.UUID
    product_id: uuid.UUID
    flow_run_id: uuid.UUID
    ad: AdParameters
    job_id: uuid.UUID | None
    job_run_id: uuid.UUID | None


async def open_ad_runs(
    session: AsyncSession, source: _AdRunSource, templates: list[str]
) -> list[AdRunTicket]:
    """Create one pending ad run per template in `session` (two statements), in template order."""
    catalog = {
        t.storage_name: t
        for t in (
            await session.scalars(
                sa.select(AdTemplate).where(
                    AdTemplate.tenant_id == source.tenant_id,
                    AdTemplate.storage_name.in_(templates),
                )
            )
        ).all()
    }
    parameters = source.ad.model_dump(mode="json")
    tickets = []
    for template in templates:
        row = catalog.get(template)
        ad_run = AdRun(
            id=uuid.uuid4(),
            tenant_id=source.tenant_id,
            product_id=source.product_id,
            template_storage_name=template,
            scheduled_job_id=source.job_id,
            scheduled_job_run_id=source.job_run_id,
            flow_run_id=source.flow_run_id,
            status="pending",
            parameters=parameters,
        )
        session.add(ad_run)
        tickets.append(
            AdRunTicket(
                ad_run_id=ad_run.id,
                template=template,
                width=row.width if row else 1080,
                height=row.height if row else 1080,
                copy_text=row.name if row else "",
            )
        )
    return tickets


@task(name="select-templates", cache_policy=NO_CACHE, task_run_name="select-templates")
async def select_templates(choice: TemplateChoice) -> list[AdRunTicket]:
    """Claim the run's templates (`count` unused ones, or the named ones, in that order) and
    open their ad runs (pending), in one transaction; returns the ad runs, in template order.

    Unused templates are claimed for the run (no other run in flight picks them); a claim is
    confirmed by `record_template_usage` or released when its template fails. The ad runs are
    opened here, not after the task: the run's generations start as soon as it returns.

    Raises:
        TemplatesExhaustedError: None is left and the policy is `fail`.
        ValueError: A named template is not in the product's catalog (the message names it).
    """
    async with session_scope() as session:
        if choice.names is not None:
            templates = await claim_specific_templates(
                session,
                tenant_id=choice.tenant_id,
                product_id=choice.product_id,
                names=choice.names,
            )
        else:
            claim = await claim_unused_templates(
                session,
                tenant_id=choice.tenant_id,
                product_id=choice.product_id,
                flow_run_id=choice.flow_run_id,
                count=choice.count,
                when_exhausted=choice.when_exhausted,
            )
            templates = claim.templates
        return await open_ad_runs(session, choice, templates) if templates else []


@task(name="generate-ad-run", cache_policy=NO_CACHE, task_run_name="generate {ticket.template}")
async def generate_ad_run(
    plan: RunPlan, ticket: AdRunTicket, resources: RunResources
) -> GeneratedAdRun:
    """Generate one ad run: N variations of one template, stored (not yet recorded).

    Never raises for a generation failure: the result carries the reason, for
    `record_template_usage` to record. Files it stored are deleted if it is cancelled.
    """
    return await _generate(plan, ticket, resources)


@task(
    name="record-template-usage",
    cache_policy=NO_CACHE,
    task_run_name="record-template-usage {label}",
)
async def record_template_usage(
    plan: RunPlan, batch: list[GeneratedAdRun], resources: RunResources, label: str
) -> list[AdRunOutcome]:
    """Record finished ad runs and their templates' usage in one transaction (in `batch` order).

    For each ad run: the ads stored (even when a later variation failed), its outcome, and the
    usage: a generated template is confirmed as used with its ad run; a failed one has its
    claim released and stays unused, and one that failed for a reason of its own is set aside,
    so no later run claims it first again. If the transaction fails, the batch's stored files
    are deleted. `label` names the templates (the task run's name).
    """
    return await _record(plan, batch, resources)


class UsageRecorder:
    """`record-template-usage` for a run's ad runs as they finish, in batches.

    Whatever finishes while a batch is being written goes in the next one: one task run and one
    transaction per batch, not per template. A batch waits up to `RECORD_GATHER_S` for the ad
    runs still generating to join it (templates sent together come back within milliseconds of
    each other: a wave is then one batch, not one for the first and one for the rest). A
    template's outcome is known once its batch commits.
    """

    def __init__(self, plan: RunPlan, resources: RunResources) -> None:
        self._plan, self._resources = plan, resources
        self._waiting: list[tuple[GeneratedAdRun, asyncio.Future[AdRunOutcome]]] = []
        self._writer: asyncio.Task[None] | None = None
        #: Ad runs opened and not yet recorded (`generating()` entered and not left): generating,
        #: or waiting for a generation or provider slot, so a batch in the middle of a run waits
        #: its whole RECORD_GATHER_S (off the run's critical path), and the last wave's none.
        self._generating = 0
        self._joined = asyncio.Event()

    @contextlib.contextmanager
    def generating(self) -> Iterator[None]:
        """Around one ad run's generation: a batch may wait for it to join."""
        self._generating += 1
        try:
            yield
        finally:
            self._generating -= 1
            self._joined.set()

    async def record(self, generated: GeneratedAdRun) -> AdRunOutcome:
        """Queue one finished ad run; returns its outcome once its batch is recorded.

        Raises:
            Exception: What the batch's transaction raised (its files are deleted).
        """
        outcome: asyncio.Future[AdRunOutcome] = asyncio.get_running_loop().create_future()
        self._waiting.append((generated, outcome))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write())
        return await outcome

    async def _gather(self) -> None:
        """Wait, up to RECORD_GATHER_S, until no opened ad run of the run is left unrecorded."""
        deadline = time.monotonic() + RECORD_GATHER_S
        while self._generating and (left := deadline - time.monotonic()) > 0:
            self._joined.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._joined.wait(), left)

    async def _write(self) -> None:
        while self._waiting:
            await self._gather()
            taken, self._waiting = self._waiting, []
            batch = [generated for generated, _ in taken]
            try:
                outcomes = await record_template_usage(
                    _unwalked(self._plan),
                    _unwalked(batch),
                    _unwalked(self._resources),
                    batch_label([g.ticket.template for g in batch]),
                )
            except BaseException as exc:
                for _, outcome in taken:
                    if not outcome.done():
                        outcome.set_exception(exc)
                if isinstance(exc, Exception):
                    continue  # handed to each waiting ad run; the next batch may still commit
                raise
            for (_, outcome), result in zip(taken, outcomes, strict=True):
                if not outcome.done():
                    outcome.set_result(result)

    async def close(self) -> None:
        """Stop writing (the run is ending early); files of ad runs never recorded are deleted."""
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        left, self._waiting = self._waiting, []
        for generated, outcome in left:
            outcome.cancel()
            await _delete_quietly(self._resources.storage, generated.written)


def batch_label(templates: list[str]) -> str:
    """The templates of a batch as a task run names them: all of up to three, else the first
    two and how many more ("a.png, b.png and 5 more")."""
    if len(templates) <= 3:
        return ", ".join(templates)
    return f"{templates[0]}, {templates[1]} and {len(templates) - 2} more"


class TemplateFault(Exception):
    """The template itself cannot be used (missing or unreadable file): set it aside."""


async def read_template(storage: AdStorage, template: str) -> bytes:
    """The template's bytes, checked to be a readable image.

    Raises:
        TemplateFault: The file is missing from storage or is not a readable image.
    """
    try:
        data = await storage.read(storage.template_path(template))
    except (FileNotFoundError, ValueError) as exc:
        # LocalFileSystem says "Path … does not exist." with a ValueError; fsspec raises
        # FileNotFoundError.
        raise TemplateFault("its file is missing from template storage") from exc
    try:
        _check_image(data)
    except Exception as exc:  # Pillow raises several types for bad images
        raise TemplateFault(f"its file is not a readable image ({type(exc).__name__})") from exc
    return data


def _check_image(data: bytes) -> None:
    # Pillow is imported where it is used: a run whose generator is remote pays for it here
    # only (the flow process's import time is on every run's critical path).
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.verify()


def template_fault(exc: BaseException) -> str | None:
    """Why a failure is the template's own (set it aside), or None (transient: release)."""
    if isinstance(exc, TemplateFault):
        return str(exc)
    if isinstance(exc, RejectedRequestError):
        return f"the provider rejected it: {exc}"[:500]
    return None


@dataclass
class GeneratedAdRun:
    """One template's generation, stored but not yet recorded (see `record_template_usage`)."""

    ticket: AdRunTicket
    started_at: datetime
    ads: list[AdSummary]
    #: `generated_ads` rows to insert, as column values.
    rows: list[dict[str, Any]]
    #: Storage paths written (deleted again if the rows are not written).
    written: list[str]
    error: str | None = None
    #: Why the template itself is at fault (set it aside), when it is.
    fault: str | None = None


async def _generate(plan: RunPlan, ticket: AdRunTicket, res: RunResources) -> GeneratedAdRun:
    logger = get_run_logger()
    storage, template = res.storage, ticket.template
    result = GeneratedAdRun(ticket=ticket, started_at=utcnow(), ads=[], rows=[], written=[])
    attempted = 0
    try:
        template_image = await res.template_bytes(template)
        product_images: dict[str, bytes] = {}
        for index in range(plan.ad.variations):
            path = _product_image_path(plan.ad, res.image_paths, index)
            if path and path not in product_images:
                product_images[path] = await storage.read(path)
            request = AdRequest(
                product=res.brief,
                template_name=template,
                template_image=template_image,
                template_copy=ticket.copy_text,
                product_image=product_images.get(path) if path else None,
                variation_index=index,
                parameters=plan.ad,
                width=ticket.width,
                height=ticket.height,
            )
            try:
                # Retryable provider errors (429, 5xx) are retried, each attempt in a slot.
                async with res.generating:
                    image = await generate_with_retries(res.generator, request, slot=res.slot)
            finally:
                res.slots.done()
                attempted += 1
            stored_at = storage.ad_path(plan.tenant_id, ticket.ad_run_id, index, image.extension)
            result.written.append(stored_at)
            # The run artifact's thumbnail is made beside the run, not after its last template
            # (where the run's end would wait for it); nothing here waits for it.
            thumbnails.remember(stored_at, image.data)
            await storage.write(stored_at, image.data)
            result.rows.append(
                {
                    "tenant_id": plan.tenant_id,
                    "ad_run_id": ticket.ad_run_id,
                    "variation_index": index,
                    "storage_path": stored_at,
                    "headline": image.headline,
                    "width": image.width,
                    "height": image.height,
                    "size_bytes": len(image.data),
                    "content_type": image.content_type,
                }
            )
            result.ads.append(
                AdSummary(
                    storage_path=stored_at,
                    headline=image.headline,
                    url=storage.public_url(stored_at),
                )
            )
    except (TemplateFault, GenerationError, FileNotFoundError, OSError, ValueError) as exc:
        res.slots.done(plan.ad.variations - attempted)  # the variations this run will not try
        result.error = str(exc) or type(exc).__name__
        fault = template_fault(exc)
        if fault and not res.may_set_aside(exc):
            fault = None  # every template is being rejected: blame the request, not them
        result.fault = fault
        logger.warning("template %s failed: %s", template, result.error)
    except BaseException:
        # Cancelled or a bug: the rows will never be written, so neither may the files.
        await _delete_quietly(storage, result.written)
        raise
    return result


async def _record(
    plan: RunPlan, batch: list[GeneratedAdRun], res: RunResources
) -> list[AdRunOutcome]:
    logger = get_run_logger()
    rows = [row for generated in batch for row in generated.rows]
    now = utcnow()
    try:
        async with session_scope() as session:
            if rows:
                # One INSERT for every variation of the batch, without the ORM's unit of work.
                await session.execute(sa.insert(GeneratedAd), rows)
            # One UPDATE statement, executed for each ad run of the batch (Core: the table's).
            ad_runs = cast(sa.Table, AdRun.__table__)
            await session.execute(
                sa.update(ad_runs)
                .where(ad_runs.c.id == sa.bindparam("ad_run"))
                .values(
                    status=sa.bindparam("new_status"),
                    error_message=sa.bindparam("error"),
                    started_at=sa.bindparam("started"),
                    completed_at=now,
                ),
                [
                    {
                        "ad_run": g.ticket.ad_run_id,
                        "new_status": "failed" if g.error else "completed",
                        "error": f"{g.error} — template set aside" if g.fault else g.error,
                        "started": g.started_at,
                    }
                    for g in batch
                ],
            )
            failed = [g.ticket.template for g in batch if g.error]
            if failed:
                await release_claims(session, flow_run_id=plan.flow_run_id, templates=failed)
            for generated in batch:
                if generated.fault:
                    await set_template_aside(
                        session,
                        tenant_id=plan.tenant_id,
                        template=generated.ticket.template,
                        reason=generated.fault,
                    )
            await confirm_template_uses(
                session,
                tenant_id=plan.tenant_id,
                product_id=plan.product_id,
                uses=[(g.ticket.template, g.ticket.ad_run_id) for g in batch if not g.error],
                flow_run_id=plan.flow_run_id,
            )
    except BaseException:
        # The rows were not written: the files must not stay in storage without them.
        for generated in batch:
            await _delete_quietly(res.storage, generated.written)
        raise
    outcomes = []
    for generated in batch:
        ticket, error, fault = generated.ticket, generated.error, generated.fault
        if error:
            if fault:
                logger.warning("template %s set aside: %s", ticket.template, fault)
            outcomes.append(
                AdRunOutcome(
                    ad_run_id=ticket.ad_run_id,
                    template=ticket.template,
                    ok=False,
                    ads=generated.ads,
                    error=error,
                    set_aside=fault,
                )
            )
            continue
        res.note_success()
        outcomes.append(
            AdRunOutcome(
                ad_run_id=ticket.ad_run_id, template=ticket.template, ok=True, ads=generated.ads
            )
        )
    made = [f"{o.template}: {len(o.ads)} ads" for o in outcomes if o.ok]
    if made:  # (a failed template was logged with its reason when it failed)
        logger.info("recorded %s", "; ".join(made))
    return outcomes


async def _delete_quietly(storage: AdStorage, paths: list[str]) -> None:
    for path in paths:
        try:
            await storage.delete_file(path)
        except Exception as exc:  # the reconciler's sweep gets what this could not
            get_run_logger().warning("could not delete %s: %s", path, type(exc).__name__)


async def export_outcomes(
    plan: RunPlan,
    outcomes: list[AdRunOutcome],
    *,
    storage: AdStorage | None = None,
    brief: ProductBrief | None = None,
) -> list[Any]:
    """Export the run's finished ad runs as tasks (`flows.exports`); never raises.

    Takes what the run holds: the plan, the outcomes, the loaded storage and the product brief
    (product and brand names). Each ad run's export is an `export-ad-run` task run, Failed
    (with the whole reason) when one of its channels failed; the ads stay stored and counted.

    Returns:
        Every `DeliveryOutcome` (status `failed` ones carry the whole reason in `error`).
    """
    if plan.export.destination == "none":
        return []
    logger = get_run_logger()
    from flows.exports import RunIdentity, export_finished_runs

    if brief is None:
        brief, _product = await load_brief(plan.tenant_id, plan.product_id)
    run = RunIdentity(
        tenant_id=plan.tenant_id,
        product_id=plan.product_id,
        flow_run_id=plan.flow_run_id,
        job_id=plan.job_id,
        job_run_id=plan.job_run_id,
        product_name=brief.name,
        brand_name=brief.brand_name,
    )
    try:
        return list(await export_finished_runs(run, outcomes, plan.export, storage=storage))
    except Exception as exc:  # an export problem must never lose the run's ads
        logger.error("export step failed: %s: %s", type(exc).__name__, exc)
        return []


@dataclass
class RunInputs:
    """What a run loads before its first template that no choice of templates changes."""

    generator: AdGenerator
    storage: AdStorage
    brief: ProductBrief
    product: Product


async def load_run_inputs(
    tenant_id: uuid.UUID,
    product_id: uuid.UUID,
    generator_block: str | None,
    *,
    brief: tuple[ProductBrief, Product] | None = None,
    generator: Awaitable[AdGenerator] | None = None,
) -> RunInputs:
    """The generator, the storage and the product brief, at once (the generator's provider
    limit is ensured by the run's first slot: `ProviderSlots(ensure=True)`).

    Independent of the templates: a flow starts it before `select-templates` so the loads
    overlap the claim (`make_ads(plan, inputs=...)`). `brief`: the brief and product already
    read (`read_brief`, in the transaction that read the job: one connection and one round trip
    fewer at the start of a run); None reads them here. `generator`: `generator_block` already
    being loaded (`load_generator`, started before the job was read); None loads it here. Every
    part is awaited even when one fails, then the first failure is raised.
    """

    async def known_brief() -> tuple[ProductBrief, Product]:
        assert brief is not None
        return brief

    loaded = await asyncio.gather(
        generator if generator is not None else load_generator(generator_block),
        _load_storage(),
        known_brief() if brief is not None else load_brief(tenant_id, product_id),
        return_exceptions=True,
    )
    for part in loaded:
        if isinstance(part, BaseException):
            raise part
    loaded_generator, storage, (product_brief, product) = cast(
        tuple[AdGenerator, AdStorage, tuple[ProductBrief, Product]], tuple(loaded)
    )
    return RunInputs(
        generator=loaded_generator, storage=storage, brief=product_brief, product=product
    )


@asynccontextmanager
async def provider_slots_ahead(
    inputs: Awaitable[RunInputs], *, requests: int, concurrency: int, after_run: bool = False
) -> AsyncIterator[asyncio.Future[ProviderSlots]]:
    """The run's provider slots, opened as soon as its generator is loaded: before its templates
    are claimed, so the first wave's `increment-with-lease` overlaps the claim (pass the future
    to `make_ads(slots=...)`).

    Args:
        inputs: The run's `load_run_inputs`, already started.
        requests: The requests the run plans (templates it asks for × variations); `make_ads`
            sets the exact number once the templates are claimed. A first wave primed for more
            templates than were claimed holds its spare slots until the run's requests end.
        concurrency: The run's first wave (`RunPlan.concurrency`).
        after_run: On a normal exit, hand the slots back (and close their client) without
            waiting (`flows.limits.hand_back_later`): the run's end does not wait for its last
            release's round trip (~15-50 ms on a busy server) or a rate window still open; its
            final-state hook does (`slots_handed_back`). On an exception (a failure, a
            cancellation, a suspension) they are handed back before it propagates, as without.

    Yields a future of the slots; on exit, every slot is handed back (the releases of a run's
    slots start as its last request ends: see `ProviderSlots.slot`) and an opening still
    waiting for the generator is stopped.
    """
    clients = AsyncExitStack()
    client = await clients.enter_async_context(get_client())

    async def open_slots() -> ProviderSlots:
        run_inputs = await inputs
        slots = ProviderSlots(run_inputs.generator, client, requests=requests, ensure=True)
        slots.prime_soon(concurrency)
        return slots

    opening = asyncio.ensure_future(open_slots())

    async def hand_back() -> None:
        try:
            if not opening.done():
                opening.cancel()
            (opened,) = await asyncio.gather(opening, return_exceptions=True)
            if isinstance(opened, ProviderSlots):
                await opened.close()
        finally:
            await clients.aclose()

    try:
        yield opening
    except BaseException:
        await hand_back()
        raise
    if after_run:
        hand_back_later(hand_back())
    else:
        await hand_back()


async def make_ads(
    plan: RunPlan,
    *,
    inputs: Awaitable[RunInputs] | None = None,
    slots: Awaitable[ProviderSlots] | None = None,
    on_generated: Callable[[list[AdRunOutcome]], Awaitable[None]] | None = None,
    on_first_wave: Callable[[], None] | None = None,
) -> PipelineResult:
    """Generate, record and export the ads of one run (the core both flows share).

    Args:
        plan: The run's templates and parameters, and its ad runs (`RunPlan.opened`, from
            `select_templates`; ValueError without them).
        inputs: `load_run_inputs` for the plan's product and generator, already started (a
            future); None loads them here.
        slots: The run's provider slots, already opening (`provider_slots_ahead`), which the
            caller hands back; None opens them here and hands them back once the last
            template is recorded.
        on_generated: Awaited with the outcomes once every template is recorded, alongside the
            export (e.g. the run's artifact, which does not depend on the export).
        on_first_wave: Called once, when the run's first wave of provider requests (as many
            as it makes at once) holds its slots: the run's start-up round trips and task-run
            starts are over and its answers are being waited for, the moment for API calls the
            run does not wait on (e.g. its rename). Not called when no wave fills (the run made
            fewer requests at once, e.g. its templates failed first).

    Whatever it raises, the run's unfinished ad runs are failed with the reason and its claims
    released first (nothing stays pending or claimed behind an exception).
    """
    try:
        async with AsyncExitStack() as stack:
            return await _make_ads(
                plan,
                stack,
                inputs=inputs,
                opening=slots,
                on_generated=on_generated,
                on_first_wave=on_first_wave,
            )
    except BaseException as exc:
        await settle_after(plan.flow_run_id, exc)
        raise


async def _make_ads(
    plan: RunPlan,
    stack: AsyncExitStack,
    *,
    inputs: Awaitable[RunInputs] | None,
    opening: Awaitable[ProviderSlots] | None,
    on_generated: Callable[[list[AdRunOutcome]], Awaitable[None]] | None,
    on_first_wave: Callable[[], None] | None,
) -> PipelineResult:
    logger = get_run_logger()
    total = len(plan.templates)
    if len(plan.opened) != total:
        raise ValueError("make_ads needs the plan's ad runs, opened by select_templates")
    # A future: awaited here and by the slots' opening.
    inputs = asyncio.ensure_future(
        inputs
        if inputs is not None
        else load_run_inputs(plan.tenant_id, plan.product_id, plan.ad.generator_block)
    )
    own_slots = opening is None
    if opening is None:
        opening = await stack.enter_async_context(
            provider_slots_ahead(
                inputs, requests=total * plan.ad.variations, concurrency=plan.concurrency
            )
        )
    # Slots opened here have their own stack: handed back as soon as the last template is
    # recorded, while the progress closes and the export runs (the outer stack is only a safety
    # net). The caller's are the caller's: a scheduled run hands them back after its body.
    slot_stack = AsyncExitStack()
    stack.push_async_callback(slot_stack.aclose)
    # The files of the templates that open first, by template: read while the first wave's
    # slots are taken, so their generations start as soon as their task runs do (not after a
    # read queued behind every other task run's start-up). Reads no ad run took are stopped.
    prefetched: dict[str, asyncio.Future[bytes]] = {}
    stack.push_async_callback(_stop_reads, prefetched)

    run_inputs = await inputs
    for template in plan.templates[: 2 * plan.concurrency]:
        prefetched[template] = asyncio.ensure_future(read_template(run_inputs.storage, template))
    slots = await opening
    if own_slots:
        slot_stack.push_async_callback(slots.close)
    slots.expect(total * plan.ad.variations)
    generator, storage = run_inputs.generator, run_inputs.storage
    progress = ProgressReporter(total)
    resources = RunResources(
        brief=run_inputs.brief,
        image_paths=list(run_inputs.product.image_paths),
        generator=generator,
        storage=storage,
        slots=slots,
        generating=asyncio.Semaphore(plan.concurrency),
        open_runs=asyncio.Semaphore(2 * plan.concurrency),
        prefetched=prefetched,
        on_first_wave=on_first_wave,
        # A template's variations go one after another: at most one request per template.
        first_wave=min(plan.concurrency, total),
    )
    # What every task of the run shares, passed without Prefect walking it for futures on each
    # call (the plan lists every template: walking it per task made a run quadratic).
    shared_plan, shared = _unwalked(plan), _unwalked(resources)
    recorder = UsageRecorder(plan, resources)
    stack.push_async_callback(recorder.close)
    finished = 0
    # Replacements for templates set aside: at most one per planned template.
    replacements_left = total if plan.replace_set_aside else 0

    async def one(ticket: AdRunTicket, replaces: str | None = None) -> list[AdRunOutcome]:
        nonlocal finished, replacements_left
        # The task run starts once its template may open: the UI shows how long each
        # generation took (not its wait), and the first wave does not wait behind every other
        # template's task-run start-up on this event loop.
        async with resources.open_runs:
            with recorder.generating():
                generated = await generate_ad_run(shared_plan, ticket, shared)
        outcome = await recorder.record(generated)
        outcome.replaces = replaces
        replacement = None
        if outcome.set_aside and replacements_left > 0:
            replacements_left -= 1
            replacement = await _claim_replacement(plan)
        if replacement is None:
            finished += 1  # a replaced template's slot in the progress goes to its replacement
            progress.update(finished)
            return [outcome]
        logger.info("template %s replaces %s (set aside)", replacement.template, ticket.template)
        # The replacement's requests are new work for the provider slots (a negative "done").
        resources.slots.done(-plan.ad.variations)
        return [outcome, *await one(replacement, replaces=ticket.template)]

    # One line for the run's templates and how they run (every line is rendered to the
    # process's console as well as sent to the API, while the run's first requests wait).
    logger.info(
        "generating %d templates (%s), %d variations each, %d at a time",
        total,
        ", ".join(plan.templates),
        plan.ad.variations,
        plan.concurrency,
    )
    running = [asyncio.ensure_future(one(t)) for t in plan.opened]
    try:
        batches = await asyncio.gather(*running)
    except BaseException:
        progress.cancel()
        # Stop the other templates before the run's work is settled: none may record itself
        # after its ad run was failed and its claim released.
        for pending in running:
            pending.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        raise
    outcomes = [o for batch in batches for o in batch]
    # Every template is recorded: what is left is independent, so it goes at once.
    after: list[Awaitable[Any]] = [progress.close(), slot_stack.aclose()]
    if on_generated is not None:
        after.append(on_generated(outcomes))
    exported, *ends = await asyncio.gather(
        export_outcomes(plan, outcomes, storage=storage, brief=run_inputs.brief),
        *after,
        return_exceptions=True,
    )
    # Every part has finished (none left running behind a failure): the first failure is raised.
    for end in (exported, *ends):
        if isinstance(end, BaseException):
            raise end
    failures = [f"{d.channel}: {d.error}" for d in exported if getattr(d, "status", "") == "failed"]
    return PipelineResult(outcomes=outcomes, export_failures=failures)


async def _stop_reads(reads: dict[str, asyncio.Future[bytes]]) -> None:
    """Stop and collect the template reads no ad run took (the run ended early)."""
    left = list(reads.values())
    reads.clear()
    for read in left:
        read.cancel()
    await asyncio.gather(*left, return_exceptions=True)


def _unwalked(value: T) -> T:
    """`value` marked for Prefect not to introspect as a task parameter (the task gets `value`)."""
    return cast(T, quote(value))


async def _claim_replacement(plan: RunPlan) -> AdRunTicket | None:
    """Claim one more unused template for the run and create its ad run; None when none left.

    Only never-used templates replace (whatever the job's exhausted policy): recycling could
    hand back a template this very run already used.
    """
    try:
        async with session_scope() as session:
            claim = await claim_unused_templates(
                session,
                tenant_id=plan.tenant_id,
                product_id=plan.product_id,
                flow_run_id=plan.flow_run_id,
                count=1,
                when_exhausted="skip",
            )
            if not claim.templates:
                return None
            return (await open_ad_runs(session, plan, claim.templates))[0]
    except TemplatesExhaustedError:
        return None


async def _load_storage() -> AdStorage:
    from blocks.storage import load_storage

    return await load_storage()


async def rename_flow_run(
    flow_run_id: uuid.UUID, name: str, tags: list[str], current_tags: list[str] | None = None
) -> None:
    """Give the flow run a name and tags a person can read in the UI (best effort).

    `tags` are added to `current_tags` (the run's tags as the caller has them; read from the
    API when not given).
    """
    try:
        async with get_client() as client:
            if current_tags is None:
                current_tags = list((await client.read_flow_run(flow_run_id)).tags)
            merged = sorted(set(current_tags) | set(tags))
            await client.update_flow_run(flow_run_id, name=name, tags=merged)
    except Exception as exc:  # cosmetic: never fail a run over its name
        get_run_logger().warning("could not rename flow run: %s", type(exc).__name__)
