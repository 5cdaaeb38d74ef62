"""Export tasks: an ad run's email and Slack post, a job run's digest email.

In the style of prefect-slack's `send_incoming_webhook_message(slack_webhook, ...)`, the tasks
take what is already loaded: the blocks, the ad storage and the provider slots (`ExportBlocks`,
opened once per run by `open_exports`), and the ad run's content in memory (`AdRunContent`).
A run's own export builds that content from the pipeline's outcome (`export_finished_runs`);
a re-send after the run reads it back from the database (`export_stored_ad_run`,
`export_stored_digest`).

An export that failed is a **Failed task run** whose state message is the whole reason (one
line per channel), while its outcomes stay readable (`outcomes_of`); the caller goes on, and
the generated ads are never touched. Never sent twice, recorded through a brief database
outage, retried later: see `flows.exports.records`. No secrets in parameters (block names
only), logs, errors or artifacts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol, cast
from uuid import UUID

from prefect import get_run_logger, task
from prefect.artifacts import acreate_table_artifact
from prefect.blocks.core import Block
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import PrefectClient, get_client
from prefect.states import Failed, State

from blocks.email_resend import ResendEmail
from blocks.errors import ErrorKind
from blocks.registry import load_block
from blocks.slack_webhook import SlackIncomingWebhook
from blocks.storage import AdStorage, load_storage
from config import get_settings
from db.models import AdRun
from db.queries.deliveries import IN_FLIGHT_LEASE, Channel, DeliveryClaim
from db.types import utcnow
from domain.params import ExportSettings
from domain.redact import redact
from flows.exports.content import (
    AdRunContent,
    ExportedAd,
    ad_key,
    content_type_of,
    flow_run_url,
)
from flows.exports.email import send_email
from flows.exports.records import (
    DeliveryOutcome,
    ExportError,
    deliver,
    failure_lines,
    load_ad_run_contents,
    run_labels,
    skipped,
)
from flows.exports.slack import post_to_slack
from flows.limits import ProviderLimit, ProviderSlots, ensure_provider_limit

LIMIT_PREFIX = "ad-scheduler"


def resend_limit_name(block_name: str) -> str:
    """Name of the provider limit of a Resend email block (`name` or `slug/name`)."""
    return f"{LIMIT_PREFIX}-resend-{block_name.rpartition('/')[2]}"


def slack_limit_name(block_name: str) -> str:
    """Name of the provider limit of a Slack webhook block (`name` or `slug/name`)."""
    return f"{LIMIT_PREFIX}-slack-{block_name.rpartition('/')[2]}"


def email_limit(block_name: str, block: ResendEmail) -> ProviderLimit:
    """The shared rate limit of an email block (its `requests_per_second`)."""
    return ProviderLimit(resend_limit_name(block_name), per_second=block.requests_per_second)


def slack_limit(block_name: str, block: SlackIncomingWebhook) -> ProviderLimit:
    """The shared rate limit of a Slack webhook block (its `messages_per_second`)."""
    return ProviderLimit(slack_limit_name(block_name), per_second=block.messages_per_second)


def block_document_name(kind: type[Block], reference: str) -> str:
    """The document name in a block reference: `name` or `<block-type-slug>/name`.

    Raises:
        ExportError: The reference names a block of another type.
    """
    slug, _, name = reference.rpartition("/")
    if slug and slug != kind.get_block_type_slug():
        raise ExportError(
            f"block {reference!r} is a {slug!r} block, not a {kind.get_block_type_slug()!r} block"
        )
    return name


@dataclass
class ExportBlocks:
    """What a run's exports use, loaded once per run (`open_exports`).

    Attributes:
        email: The Resend email block, when email is configured and it loaded.
        slack: The Slack webhook block, when Slack is configured and it loaded.
        storage: The ad storage (images are read from it), when it loaded.
        email_slots: The run's slots of the email block's shared rate limit.
        slack_slots: The run's slots of the Slack webhook block's shared rate limit.
        problems: Per channel, why it cannot be sent (reason, kind); recorded on its delivery.
    """

    email: ResendEmail | None = None
    slack: SlackIncomingWebhook | None = None
    storage: AdStorage | None = None
    email_slots: ProviderSlots | None = None
    slack_slots: ProviderSlots | None = None
    problems: dict[str, tuple[str, ErrorKind]] = field(default_factory=dict)

    @property
    def secrets(self) -> list[str]:
        """Values no error text may show (the API key, the webhook URL)."""
        found = []
        if self.email is not None:
            found.append(self.email.api_key.get_secret_value())
        if self.slack is not None:
            found.append(self.slack.url.get_secret_value())
        return found

    def check(self, channel: Channel) -> None:
        """Raise the channel's problem, if it has one (before anything is sent).

        Raises:
            ExportError: The channel's block, storage or limit could not be set up.
        """
        if channel in self.problems:
            message, kind = self.problems[channel]
            raise ExportError(message, kind)


async def _load(kind: type[Block], reference: str, label: str) -> Any:
    name = block_document_name(kind, reference)
    try:
        return await load_block(name, kind)
    except (ValueError, LookupError):
        raise ExportError(
            f"no {label} block named {name!r} is saved on the Prefect server"
        ) from None


@asynccontextmanager
async def _client(client: PrefectClient | None) -> AsyncIterator[PrefectClient]:
    if client is not None:
        yield client
        return
    async with get_client() as fresh:
        yield fresh


@asynccontextmanager
async def open_exports(
    export: ExportSettings,
    *,
    storage: AdStorage | None = None,
    client: PrefectClient | None = None,
) -> AsyncIterator[ExportBlocks]:
    """Load the blocks, the storage and the provider limits the export settings need, once.

    A block or limit that cannot be set up is not raised: it becomes the channel's problem,
    recorded on its delivery when the export runs.

    Args:
        export: The job's (or run's) export settings.
        storage: The ad storage when the caller holds it already (else it is loaded).
        client: An open Prefect client for the limits (else one is opened).
    """
    blocks = ExportBlocks(storage=storage)
    wanted: list[Channel] = []
    if export.wants_email and export.email_block:
        wanted.append("email")
        try:
            blocks.email = await _load(ResendEmail, export.email_block, "Resend email")
        except ExportError as exc:
            blocks.problems["email"] = (exc.message, exc.kind)
    if export.wants_slack and export.slack_webhook_block:
        wanted.append("slack")
        try:
            blocks.slack = await _load(
                SlackIncomingWebhook, export.slack_webhook_block, "Slack webhook"
            )
        except ExportError as exc:
            blocks.problems["slack"] = (exc.message, exc.kind)
    if blocks.storage is None and wanted:
        try:
            blocks.storage = await load_storage()
        except (ValueError, LookupError) as exc:
            for channel in wanted:
                blocks.problems.setdefault(
                    channel,
                    (f"the ad storage block cannot be loaded ({type(exc).__name__})", "permanent"),
                )
    async with _client(client) as api:
        limits: list[tuple[Channel, ProviderLimit]] = []
        if blocks.email is not None and export.email_block:
            limits.append(("email", email_limit(export.email_block, blocks.email)))
        if blocks.slack is not None and export.slack_webhook_block:
            limits.append(("slack", slack_limit(export.slack_webhook_block, blocks.slack)))
        opened: list[ProviderSlots] = []
        for channel, limit in limits:
            try:
                await ensure_provider_limit(limit, client=api)
            except Exception as exc:  # the Prefect API: a later try can succeed
                blocks.problems.setdefault(
                    channel,
                    (f"its rate limit could not be set up ({type(exc).__name__})", "retryable"),
                )
                continue
            slots = ProviderSlots(limit, api)
            opened.append(slots)
            if channel == "email":
                blocks.email_slots = slots
            else:
                blocks.slack_slots = slots
        try:
            yield blocks
        finally:
            for slots in opened:
                await slots.__aexit__(None, None, None)


async def ensure_export_limits(export: ExportSettings) -> None:
    """Create (or correct) the shared rate limits the configured exports need; idempotent.

    One limit per email block (its `requests_per_second`) and one per Slack webhook block (its
    `messages_per_second`). A block that cannot be loaded is skipped here: the export records
    that failure on its delivery.
    """
    async with open_exports(export):
        pass


async def _state(call: object) -> State[Any]:
    """Await a task called with `return_state=True` (Prefect's overloads type it as a State)."""
    return cast(State[Any], await cast(Awaitable[Any], call))


async def outcomes_of(state: State[Any]) -> list[DeliveryOutcome]:
    """The outcomes an export task run returned, whether it Completed or Failed."""
    result = await state.aresult(raise_on_failure=False)
    return list(result) if isinstance(result, list) else []


def _finish(outcomes: list[DeliveryOutcome]) -> list[DeliveryOutcome] | State[Any]:
    """The task's result: its outcomes, in a Failed state naming every failure when any failed."""
    failures = failure_lines(outcomes)
    if not failures:
        return outcomes
    return Failed(message="export failed — " + "; ".join(failures), data=outcomes)


async def _publish(outcomes: list[DeliveryOutcome], subject: str) -> None:
    if not outcomes:
        return
    try:
        await acreate_table_artifact(
            table=[o.model_dump(mode="json") | {"run": subject} for o in outcomes],
            description=f"Export deliveries of {subject}",
        )
    except Exception:  # an artifact is a nicety; never fail an export over it
        get_run_logger().debug("could not create the export artifact", exc_info=True)


def ad_run_channels(export: ExportSettings) -> list[Channel]:
    """The channels an ad run is exported to (email only in `per_ad_run` mode)."""
    channels: list[Channel] = []
    if export.wants_email and export.email_mode == "per_ad_run":
        channels.append("email")
    if export.wants_slack:
        channels.append("slack")
    return channels


def wants_digest(export: ExportSettings) -> bool:
    """Whether a job run's ads are emailed as one digest."""
    return export.wants_email and export.email_mode == "digest"


@task(
    name="export-ad-run",
    task_run_name="export {content.template_label}",
    cache_policy=NO_CACHE,
)
async def export_ad_run(
    content: AdRunContent,
    export: ExportSettings,
    blocks: ExportBlocks,
    *,
    force: bool = False,
    in_flight_lease: timedelta = IN_FLIGHT_LEASE,
) -> list[DeliveryOutcome] | State[Any]:
    """Export one ad run: its email (in `per_ad_run` mode) and its Slack post.

    Never raises for provider, network or configuration errors: each channel's result is
    recorded on its delivery row and returned. When one failed, the task run ends Failed with
    the whole reason as its message (its outcomes still readable with `outcomes_of`).

    Args:
        content: The ad run, in memory (completed, with its ads).
        export: The export settings (recipients, email mode, block names).
        blocks: The blocks, storage and slots loaded for the run (`open_exports`).
        force: Send again even what was already sent (a manual re-send).
        in_flight_lease: How long a claimed, still pending delivery is left to its sender.

    Returns:
        One outcome per channel the settings ask for (none when exports are off).

    Example:
        ```python
        from flows.exports import export_ad_run, open_exports, outcomes_of
        async with open_exports(export) as blocks:
            state = await export_ad_run(content, export, blocks, return_state=True)
        outcomes = await outcomes_of(state)
        ```
    """
    logger = get_run_logger()
    outcomes: list[DeliveryOutcome] = []
    for channel in ad_run_channels(export):
        if channel == "email":

            async def send(claim: DeliveryClaim) -> str:
                blocks.check("email")
                assert blocks.email is not None and blocks.storage is not None
                return await send_email(
                    [content],
                    block=blocks.email,
                    storage=blocks.storage,
                    recipients=[str(r) for r in export.email_recipients],
                    claim=claim,
                    ad_run_id=content.ad_run_id,
                    job_run_id=None,
                    slots=blocks.email_slots,
                    logger=logger,
                )

        else:

            async def send(claim: DeliveryClaim) -> str:
                blocks.check("slack")
                assert blocks.slack is not None and blocks.storage is not None
                return await post_to_slack(
                    content,
                    block=blocks.slack,
                    storage=blocks.storage,
                    slots=blocks.slack_slots,
                    logger=logger,
                )

        outcomes.append(
            await deliver(
                channel=channel,
                tenant_id=content.tenant_id,
                ad_run_id=content.ad_run_id,
                job_run_id=None,
                force=force,
                send=send,
                secrets=blocks.secrets,
                logger=logger,
                in_flight_lease=in_flight_lease,
            )
        )
    await _publish(outcomes, f"ad run {content.ad_run_id}")
    return _finish(outcomes)


@task(name="export-job-run-digest", cache_policy=NO_CACHE)
async def export_job_run_digest(
    contents: list[AdRunContent],
    job_run_id: UUID,
    export: ExportSettings,
    blocks: ExportBlocks,
    *,
    force: bool = False,
    in_flight_lease: timedelta = IN_FLIGHT_LEASE,
) -> list[DeliveryOutcome] | State[Any]:
    """Email one digest of a job run's completed ad runs (`digest` email mode).

    Slack is posted per ad run by `export_ad_run`, so a digest is email only. Never raises for
    provider, network or configuration errors; a failed digest is a Failed task run.

    Args:
        contents: The job run's completed ad runs with ads, in memory.
        job_run_id: The `scheduled_job_runs` row the digest is recorded under.
        export: The export settings.
        blocks: The blocks, storage and slots loaded for the run (`open_exports`).
        force: Send again even if this digest was already sent (a manual re-send).
        in_flight_lease: How long a claimed, still pending delivery is left to its sender.

    Returns:
        The email outcome, or nothing when the settings ask for no digest.
    """
    logger = get_run_logger()
    if not wants_digest(export):
        return []
    if not contents:
        return skipped(["email"], f"job run {job_run_id} has no generated ads to export")

    async def send(claim: DeliveryClaim) -> str:
        blocks.check("email")
        assert blocks.email is not None and blocks.storage is not None
        return await send_email(
            contents,
            block=blocks.email,
            storage=blocks.storage,
            recipients=[str(r) for r in export.email_recipients],
            claim=claim,
            ad_run_id=None,
            job_run_id=job_run_id,
            slots=blocks.email_slots,
            logger=logger,
        )

    outcome = await deliver(
        channel="email",
        tenant_id=contents[0].tenant_id,
        ad_run_id=None,
        job_run_id=job_run_id,
        force=force,
        send=send,
        secrets=blocks.secrets,
        logger=logger,
        in_flight_lease=in_flight_lease,
    )
    await _publish([outcome], f"job run {job_run_id}")
    return _finish([outcome])


# --------------------------------------------------------------------------------------------
# A run's own export, from what the pipeline holds


class FinishedAd(Protocol):
    """A stored ad as the pipeline reports it (`flows.pipeline.AdSummary`)."""

    @property
    def storage_path(self) -> str: ...  # noqa: D102

    @property
    def headline(self) -> str: ...  # noqa: D102


class FinishedAdRun(Protocol):
    """An ad run's outcome as the pipeline reports it (`flows.pipeline.AdRunOutcome`)."""

    @property
    def ad_run_id(self) -> UUID: ...  # noqa: D102

    @property
    def template(self) -> str: ...  # noqa: D102

    @property
    def ok(self) -> bool: ...  # noqa: D102

    @property
    def ads(self) -> Sequence[FinishedAd]: ...  # noqa: D102


@dataclass(frozen=True)
class RunIdentity:
    """Who and what a run's exports are about (what the pipeline's plan holds).

    Attributes:
        tenant_id: The run's tenant.
        product_id: Its product.
        flow_run_id: Its Prefect flow run.
        job_id: Its scheduled job, or None for a manual run.
        job_run_id: Its `scheduled_job_runs` row (a digest is recorded under it), or None.
        product_name: The product's name.
        brand_name: The brand's name.
    """

    tenant_id: UUID
    product_id: UUID
    flow_run_id: UUID | None
    job_id: UUID | None
    job_run_id: UUID | None
    product_name: str
    brand_name: str


async def contents_of_run(
    run: RunIdentity, finished: Sequence[FinishedAdRun]
) -> list[AdRunContent]:
    """Export content of a run's successful ad runs, from memory (one read: job/template names)."""
    done = [f for f in finished if f.ok and f.ads]
    if not done:
        return []
    job_name, labels, completed_at = await run_labels(
        run.tenant_id, run.job_id, [f.template for f in done], [f.ad_run_id for f in done]
    )
    url = flow_run_url(get_settings().prefect_ui_url, run.flow_run_id)
    return [
        AdRunContent(
            ad_run_id=f.ad_run_id,
            tenant_id=run.tenant_id,
            product_id=run.product_id,
            product_name=run.product_name,
            brand_name=run.brand_name,
            template_storage_name=f.template,
            template_label=labels.get(f.template, f.template),
            job_id=run.job_id,
            job_name=job_name,
            flow_run_id=run.flow_run_id,
            when=completed_at.get(f.ad_run_id) or utcnow(),
            ads=tuple(
                ExportedAd(
                    storage_path=ad.storage_path,
                    headline=ad.headline,
                    content_type=content_type_of(ad.storage_path),
                    key=ad_key(f.ad_run_id, index),
                )
                for index, ad in enumerate(f.ads)
            ),
            run_url=url,
        )
        for f in done
    ]


async def export_finished_runs(
    run: RunIdentity,
    finished: Sequence[FinishedAdRun],
    export: ExportSettings,
    *,
    storage: AdStorage | None = None,
) -> list[DeliveryOutcome]:
    """Export a run's successful ad runs (and its digest), as tasks; never raises.

    Blocks, storage and limits are loaded once for the run; each ad run's export is one
    `export-ad-run` task run (Failed when one of its channels failed), the digest one
    `export-job-run-digest` task run.

    Returns:
        Every delivery outcome of the run (failed ones carry the whole reason).
    """
    contents = await contents_of_run(run, finished)
    if not contents:
        return []
    async with open_exports(export, storage=storage) as blocks:
        states: list[State[Any]] = []
        if ad_run_channels(export):
            states += await asyncio.gather(
                *[_state(export_ad_run(c, export, blocks, return_state=True)) for c in contents]
            )
        if wants_digest(export) and run.job_run_id is not None:
            states.append(
                await _state(
                    export_job_run_digest(
                        contents, run.job_run_id, export, blocks, return_state=True
                    )
                )
            )
    outcomes: list[DeliveryOutcome] = []
    for state in states:
        outcomes.extend(await outcomes_of(state))
    return outcomes


# --------------------------------------------------------------------------------------------
# A re-send after the run, from the database


@asynccontextmanager
async def _opened(
    export: ExportSettings, blocks: ExportBlocks | None
) -> AsyncIterator[ExportBlocks]:
    if blocks is not None:
        yield blocks
        return
    async with open_exports(export) as opened:
        yield opened


async def _export_stored(
    export: ExportSettings,
    blocks: ExportBlocks | None,
    call: Callable[[ExportBlocks], object],
) -> list[DeliveryOutcome]:
    """Run one export task (`call`, with the blocks) and return its outcomes."""
    async with _opened(export, blocks) as opened:
        state = await _state(call(opened))
    return await outcomes_of(state)


async def export_stored_ad_run(
    ad_run_id: UUID,
    export: ExportSettings,
    *,
    force: bool = False,
    in_flight_lease: timedelta = IN_FLIGHT_LEASE,
    blocks: ExportBlocks | None = None,
) -> list[DeliveryOutcome]:
    """Export a stored ad run (a re-send: `retry-exports`, `ad-scheduler export`).

    Args:
        ad_run_id: The ad run.
        export: The settings to export with (block names, recipients, email mode).
        force: Send again even what was already sent.
        in_flight_lease: How long a claimed, still pending delivery is left to its sender.
        blocks: Blocks already opened for these settings (else they are opened here).

    Returns:
        One outcome per channel the settings ask for.
    """
    channels = ad_run_channels(export)
    if not channels:
        return []
    loaded = await load_ad_run_contents(AdRun.id == ad_run_id)
    if not loaded:
        return skipped(channels, f"ad run {ad_run_id} does not exist")
    content, status = loaded[0]
    if status != "completed" or not content.ads:
        return skipped(channels, f"ad run {ad_run_id} has no generated ads to export")
    return await _export_stored(
        export,
        blocks,
        lambda opened: export_ad_run(
            content, export, opened, force=force, in_flight_lease=in_flight_lease, return_state=True
        ),
    )


async def export_stored_digest(
    job_run_id: UUID,
    export: ExportSettings,
    *,
    force: bool = False,
    in_flight_lease: timedelta = IN_FLIGHT_LEASE,
    blocks: ExportBlocks | None = None,
) -> list[DeliveryOutcome]:
    """Email the digest of a stored job run (a re-send); see `export_stored_ad_run`."""
    if not wants_digest(export):
        return []
    contents = [
        content
        for content, status in await load_ad_run_contents(AdRun.scheduled_job_run_id == job_run_id)
        if status == "completed" and content.ads
    ]
    if not contents:
        return skipped(["email"], f"job run {job_run_id} has no generated ads to export")
    return await _export_stored(
        export,
        blocks,
        lambda opened: export_job_run_digest(
            contents,
            job_run_id,
            export,
            opened,
            force=force,
            in_flight_lease=in_flight_lease,
            return_state=True,
        ),
    )


def describe_failure(exc: BaseException, blocks: ExportBlocks | None = None) -> str:
    """An unexpected export error as text a person may see (redacted)."""
    return redact(f"{type(exc).__name__}: {exc}", blocks.secrets if blocks else ())
