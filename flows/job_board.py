"""The job board: one keyed markdown artifact per tenant that shows every live job.

It is the old scheduler page's list view, inside the Prefect UI (Artifacts → `job-board-<tenant>`):
brand, product, job (a link to its deployment), status with its pause note, schedule in the job's
own time zone, runs done / max, next run, the last run's status with its whole reason, and the
latest ads as thumbnails; then, per product, how many templates it has used and has left.

It is refreshed after every change (the SDK calls `refresh_job_board_quietly`) and after every
run (`refresh_board_after_run`, a final-state hook of `run-scheduled-job`). Each refresh is a new
version of the same key, so the Artifacts page shows one card per tenant with the latest on top.

The artifact belongs to no flow run (created through the client, not `create_markdown_artifact`),
so it does not clutter the runs' own Artifacts tabs.

Bounds: thumbnails of `BOARD_THUMBNAIL_WIDTH` px and at most `BOARD_THUMBNAIL_MAX_BYTES` each,
at most `db.queries.board.ADS_PER_JOB` per job and `BOARD_MAX_BYTES` of thumbnails per board;
past that an ad is a link (storage with a public URL) or its storage path, and the board says so.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactCreate

from blocks.storage import AdStorage
from db.queries.board import Board, BoardJob, BoardRun, read_board
from domain import text as medium
from flows.artifacts import ad_picture_cell, thumbnails_note
from flows.pipeline import AdSummary
from flows.thumbnails import (
    BOARD_THUMBNAIL_MAX_BYTES,
    BOARD_THUMBNAIL_WIDTH,
    Thumbnails,
    make_thumbnails,
    within_budget,
)

logger = logging.getLogger(__name__)

#: Largest total of thumbnail data URIs on one board, in bytes (~300 thumbnails of 64 px).
BOARD_MAX_BYTES = 800_000
#: Boards one holder of a tenant's refresh publishes before it hands the rest on.
HOLDER_ROUNDS = 2
#: How long a holder keeps the refresh without finishing a round (a dead holder's lapses).
REFRESH_LEASE = timedelta(seconds=120)
#: While other runs of a tenant are in flight, a run that ends this soon after the last
#: published board leaves the board to them: how far behind a busy tenant's board may be.
BUSY_BOARD_INTERVAL = timedelta(seconds=15)
#: The whole reason a run failed is shown, up to this many characters (a safety bound only).
REASON_MAX = 4_000

#: Only marks every browser font has (a paused or skipped mark showed as a box in Chromium).
_RUN_ICONS = {"completed": "✅", "failed": "❌"}


def board_key(tenant_id: uuid.UUID) -> str:
    """The artifact key of a tenant's board (lowercase letters, digits and dashes)."""
    return f"job-board-{tenant_id}"


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError):
        return UTC


def _when(moment: datetime | None, zone: str) -> str:
    if moment is None:
        return "—"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(_zone(zone)).strftime("%Y-%m-%d %H:%M %Z")


def _status_cell(job: BoardJob) -> str:
    cell = f"**{job.status}**"
    if job.pause_note:
        cell += "<br>" + medium.markdown_cell(job.pause_note, limit=REASON_MAX)
    return cell


def _schedule_cell(job: BoardJob) -> str:
    zone = medium.markdown_cell(job.timezone)
    if job.schedule_type == "one_time":
        when = f"once at {_when(job.scheduled_at, job.timezone)}"
    else:
        when = f"{medium.markdown_code_cell(job.cron_expression or '')} {zone}"
    # A paused or completed job has no next run, whatever the row last said.
    upcoming = _when(job.next_run_at, job.timezone) if job.status == "active" else "—"
    return f"{when}<br>next: {upcoming}"


def _runs_cell(job: BoardJob) -> str:
    return f"{job.runs_completed} / {job.max_runs if job.max_runs else '∞'}"


def _last_run_cell(run: BoardRun | None, zone: str) -> str:
    if run is None:
        return "no run yet"
    status = run.status or "pending"
    parts = [f"{_RUN_ICONS.get(status, '')} {status}".strip()]
    if run.prefect_state and run.prefect_state.lower() != status:
        parts[0] += f" ({medium.markdown_cell(run.prefect_state)})"
    parts.append(_when(run.started_at or run.completed_at, zone))
    if run.trigger == "manual":
        parts.append("manual run")
    if run.error_message:
        parts.append(medium.markdown_cell(run.error_message, limit=REASON_MAX))
    elif run.skip_reason and run.logs:
        parts.append(medium.markdown_cell(run.logs, limit=REASON_MAX))
    return "<br>".join(parts)


def _job_cell(job: BoardJob) -> str:
    name = medium.markdown_cell(job.name)
    if job.prefect_deployment_id is not None:
        # Same origin as the UI showing the board: a relative link opens the deployment page.
        name = f'<a href="/deployments/deployment/{job.prefect_deployment_id}">{name}</a>'
    where = f"{medium.markdown_cell(job.brand)} · {medium.markdown_cell(job.product)}"
    return f"**{name}**<br>{where}<br>templates: {medium.markdown_cell(job.template_mode)}"


def _ads_cell(job: BoardJob, thumbs: Thumbnails, storage: AdStorage | None) -> str:
    if not job.latest_ads:
        return "—"
    cells = []
    for ad in job.latest_ads:
        summary = AdSummary(
            storage_path=ad.storage_path,
            headline=ad.headline,
            url=storage.public_url(ad.storage_path) if storage else None,
        )
        cells.append(
            ad_picture_cell(summary, thumbs.uris.get(ad.storage_path), width=BOARD_THUMBNAIL_WIDTH)
        )
    more = job.latest_ads_total - len(job.latest_ads)
    tail = f"<br>+{more} more" if more > 0 else ""
    when = _when(job.latest_ads_run_at, job.timezone)
    return " ".join(cells) + f"<br>run of {when}" + tail


def render_board_markdown(
    board: Board,
    thumbnails: Thumbnails | None = None,
    *,
    storage: AdStorage | None = None,
    now: datetime | None = None,
) -> str:
    """Markdown of a tenant's board.

    Args:
        board: What `db.queries.board.read_board` read.
        thumbnails: Pictures by storage path (ads without one are links or paths).
        storage: Gives public URLs for links to the full ads, when it has them.
        now: The time shown as "updated" (default: now).
    """
    thumbs = thumbnails or Thumbnails(uris={})
    updated = (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [
        f"## Job board: {len(board.jobs)} job{'' if len(board.jobs) == 1 else 's'}",
        "",
        f"Updated {updated}, after every change and every run. Times are in each job's own "
        "time zone.",
        "",
    ]
    if board.jobs:
        lines += [
            # The pictures come second: the UI scrolls a wide table sideways, and they are what
            # people look for first.
            "| Job | Latest ads | Status | Runs done / max | Schedule | Last run |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for job in board.jobs:
            cells = [
                _job_cell(job),
                _ads_cell(job, thumbs, storage),
                _status_cell(job),
                _runs_cell(job),
                _schedule_cell(job),
                _last_run_cell(job.last_run, job.timezone),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    else:
        lines.append("No jobs yet: create one with `ad-scheduler jobs create`.")
    lines += ["", "### Templates per product", ""]
    if board.products:
        lines += ["| Brand | Product | Used | Unused |", "| --- | --- | --- | --- |"]
        for p in board.products:
            lines.append(
                f"| {medium.markdown_cell(p.brand)} | {medium.markdown_cell(p.product)} | "
                f"{p.used} | {p.unused} |"
            )
    else:
        lines.append("No products yet.")
    note = thumbnails_note(thumbs, budget=BOARD_MAX_BYTES)
    if note:
        lines += ["", note]
    return "\n".join(lines)


async def refresh_job_board(
    tenant_id: uuid.UUID, storage: AdStorage | None = None, *, database_url: str | None = None
) -> uuid.UUID:
    """Read the tenant's board and publish it as a new version of its key (now, uncoalesced:
    callers that may run many at once use `request_job_board_refresh`).

    Args:
        tenant_id: Whose board.
        storage: Where the ads are; None loads the configured storage.
        database_url: The app database; None: the configured one.

    Returns:
        The new artifact's id.

    Raises:
        Whatever reading the database or calling the Prefect API raises (see
        `refresh_job_board_quietly` for callers that must not fail on it).
    """
    from blocks.storage import load_storage
    from db.session import session_scope

    async with session_scope(database_url) as session:
        board = await read_board(session, tenant_id)
    if storage is None:
        storage = await load_storage()
    thumbs = await _board_pictures(board, storage, database_url=database_url)
    markdown = render_board_markdown(board, thumbs, storage=storage)
    async with get_client() as client:
        artifact = await client.create_artifact(
            ArtifactCreate(
                key=board_key(tenant_id),
                type="markdown",
                data=markdown,
                description=f"Every job of tenant {tenant_id}: status, runs, latest ads.",
            )
        )
    return artifact.id


async def _board_pictures(
    board: Board, storage: AdStorage, *, database_url: str | None
) -> Thumbnails:
    """The board's pictures within `BOARD_MAX_BYTES`: stored ones as they are; the others made
    (from this process's thumbnails, else read back from storage) and stored for next time."""
    shown = [ad for job in board.jobs for ad in job.latest_ads]
    missing = [ad for ad in shown if ad.thumbnail is None]
    made = Thumbnails(uris={})
    if missing:
        made = await make_thumbnails(
            storage,
            [ad.storage_path for ad in missing],
            size=BOARD_THUMBNAIL_WIDTH,
            max_bytes=BOARD_THUMBNAIL_MAX_BYTES,
            budget=len(missing) * BOARD_THUMBNAIL_MAX_BYTES,
        )
        await _store_quietly(
            {
                ad.ad_id: made.uris[ad.storage_path]
                for ad in missing
                if ad.storage_path in made.uris
            },
            database_url=database_url,
        )
    return within_budget(
        ((ad.storage_path, ad.thumbnail or made.uris.get(ad.storage_path)) for ad in shown),
        budget=BOARD_MAX_BYTES,
    )


async def _store_quietly(pictures: dict[uuid.UUID, str], *, database_url: str | None) -> None:
    """Store board pictures; a failure only costs making them again next time."""
    from db.queries.board import save_board_thumbnails
    from db.session import session_scope

    if not pictures:
        return
    try:
        async with session_scope(database_url) as session:
            await save_board_thumbnails(session, pictures)
    except Exception as exc:
        logger.warning("board pictures not stored (%s)", type(exc).__name__)


async def request_job_board_refresh(
    tenant_id: uuid.UUID, *, database_url: str | None = None, storage: AdStorage | None = None
) -> uuid.UUID | None:
    """Ask for the tenant's board to be refreshed, and refresh it unless another process is.

    Coalesced per tenant (`db.queries.board_refresh`): a caller that finds the refresh held
    returns at once, and the holder's next round reads what this caller committed before
    asking. A holder publishes at most `HOLDER_ROUNDS` boards, then hands the rest on to the
    next request or to the reconciler's sweep (`refresh_boards_behind`): a run's process must
    not stay behind refreshing boards while its worker slot waits.

    Returns:
        The id of the last board this call published, or None when it published none (another
        process holds the refresh).

    Raises:
        Whatever reading the database or calling the Prefect API raises (the refresh is handed
        on first).
    """
    from db.queries.board_refresh import ask_for_refresh, finish_round
    from db.session import session_scope

    holder = uuid.uuid4()
    async with session_scope(database_url) as session:
        turn = await ask_for_refresh(
            session, tenant_id, holder, now=datetime.now(UTC), lease=REFRESH_LEASE
        )
    if not turn.holding:
        return None
    covered: int | None = None
    wanted = turn.requested
    artifact: uuid.UUID | None = None
    try:
        for _round in range(HOLDER_ROUNDS):
            artifact = await refresh_job_board(tenant_id, storage, database_url=database_url)
            covered = wanted
            async with session_scope(database_url) as session:
                more = await finish_round(
                    session, tenant_id, holder, covered, now=datetime.now(UTC), lease=REFRESH_LEASE
                )
            if more is None:
                return artifact
            wanted = more
    except BaseException:
        await _hand_on_quietly(tenant_id, holder, covered, database_url=database_url)
        raise
    await _hand_on_quietly(tenant_id, holder, covered, database_url=database_url)
    return artifact


async def _hand_on_quietly(
    tenant_id: uuid.UUID, holder: uuid.UUID, covered: int | None, *, database_url: str | None
) -> None:
    from db.queries.board_refresh import hand_on
    from db.session import session_scope

    try:
        async with session_scope(database_url) as session:
            await hand_on(session, tenant_id, holder, covered)
    except Exception as exc:  # the lease lapses by itself
        logger.warning(
            "job board refresh of tenant %s not handed on (%s)", tenant_id, type(exc).__name__
        )


async def refresh_job_board_quietly(
    tenant_id: uuid.UUID, *, database_url: str | None = None
) -> uuid.UUID | None:
    """`request_job_board_refresh`, logging instead of raising: a board that could not be
    refreshed must never fail the change or the run that asked for it (the next refresh, or the
    reconciler's sweep, catches up).

    Returns:
        The new artifact's id, or None when this call published none (another process holds the
        refresh) or the refresh failed (only the error's type is logged: driver messages can
        carry connection details).
    """
    try:
        return await request_job_board_refresh(tenant_id, database_url=database_url)
    except Exception as exc:
        logger.warning("job board of tenant %s not refreshed (%s)", tenant_id, type(exc).__name__)
        return None


async def refresh_boards_behind(
    tenant_ids: list[uuid.UUID] | None = None, *, database_url: str | None = None
) -> list[uuid.UUID]:
    """Refresh every board that misses requests nobody is serving (a holder that handed on, or
    died): the reconciler's sweep. `tenant_ids` limits it to those tenants' boards.

    Returns:
        The tenants whose board it asked to refresh.
    """
    from db.queries.board_refresh import boards_behind
    from db.session import session_scope

    async with session_scope(database_url) as session:
        tenants = await boards_behind(session, now=datetime.now(UTC), tenant_ids=tenant_ids)
    for tenant_id in tenants:
        await refresh_job_board_quietly(tenant_id, database_url=database_url)
    return tenants


async def store_run_board_pictures(flow_run_id: uuid.UUID) -> int:
    """Store the board pictures of the ads this flow run made, from the thumbnails this process
    made while storing them (`flows.thumbnails.remember`): no ad is read back or decoded again.

    Returns:
        How many were stored. Never raises (a failure only costs making them later).
    """
    from db.queries.board import ads_without_board_thumbnail, save_board_thumbnails
    from db.session import session_scope
    from flows.thumbnails import remembered

    try:
        async with session_scope() as session:
            ads = await ads_without_board_thumbnail(session, flow_run_id)
            pictures = {}
            for ad_id, path in ads.items():
                uri = await remembered(path, BOARD_THUMBNAIL_WIDTH)
                if uri is not None:
                    pictures[ad_id] = uri
            await save_board_thumbnails(session, pictures)
        return len(pictures)
    except Exception as exc:
        logger.warning(
            "board pictures of flow run %s not stored (%s)", flow_run_id, type(exc).__name__
        )
        return 0


# Prefect calls hooks with keyword arguments: the names must be exactly these.
async def refresh_board_after_run(flow: Any, flow_run: Any, state: Any) -> None:
    """Final-state hook of `run-scheduled-job`: store the run's board pictures, then ask for a
    refresh of the board of the run's job's tenant (coalesced: `request_job_board_refresh`;
    while other runs of the tenant are in flight, at most one board per `BUSY_BOARD_INTERVAL`,
    and the last run to end publishes).

    Listed after the mirror hook (`flows.history.on_state_change`), so the board shows the
    run's final status. Never raises.
    """
    from db.models import ScheduledJob
    from db.session import session_scope

    try:
        job_id = uuid.UUID(str((flow_run.parameters or {})["job_id"]))
        async with session_scope() as session:
            job = await session.get(ScheduledJob, job_id)
        tenant_id = job.tenant_id if job is not None else None
    except Exception as exc:
        logger.warning("job board not refreshed after run (%s)", type(exc).__name__)
        return
    await store_run_board_pictures(flow_run.id)
    if tenant_id is not None and not await _deferred(tenant_id, flow_run.id):
        await refresh_job_board_quietly(tenant_id)


async def _deferred(tenant_id: uuid.UUID, flow_run_id: uuid.UUID) -> bool:
    """Count the run's request without publishing when others of its tenant are in flight and a
    board went out less than `BUSY_BOARD_INTERVAL` ago (`db.queries.board_refresh.may_defer`).
    False (publish) when that cannot be decided."""
    from db.queries.board_refresh import may_defer, note_request
    from db.session import session_scope

    try:
        async with session_scope() as session:
            if not await may_defer(
                session,
                tenant_id,
                flow_run_id,
                now=datetime.now(UTC),
                interval=BUSY_BOARD_INTERVAL,
            ):
                return False
            await note_request(session, tenant_id)
        return True
    except Exception as exc:
        logger.warning("job board deferral not decided (%s)", type(exc).__name__)
        return False
