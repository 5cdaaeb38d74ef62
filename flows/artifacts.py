"""The run artifact: every ad a run made, as a picture, with its headline and template.

Thumbnails are small JPEGs inlined as `data:image/jpeg;base64,…` URIs (`flows/thumbnails.py`,
made as each ad is stored), so the Prefect UI shows them whatever the storage is. Checked in
headless Chromium against Prefect 3.9's UI (tests/ui): its markdown renderer
keeps `<img src="data:…" width=…>` inside a table cell and the image loads.

Bounds (a markdown artifact is one JSON value the UI loads whole):

- one thumbnail: at most `THUMBNAIL_WIDTH` px on its longest side and `THUMBNAIL_MAX_BYTES` bytes
  of data URI; a picture that does not fit (after a lower quality and a smaller size were tried)
  is shown as a link (storage with a public URL) or its storage path instead;
- one run artifact: at most `RUN_ARTIFACT_MAX_BYTES` of thumbnails; the ads past the budget are
  shown as links/paths, and the artifact says how many.

Names, headlines and error messages are data: every cell goes through `domain.text`, so a `|`
or a newline cannot break the table and no markup in a name is rendered.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

from prefect import get_run_logger
from prefect.artifacts import acreate_markdown_artifact
from prefect.client.schemas.objects import FlowRun

from blocks.storage import AdStorage
from domain import text as medium
from flows.pipeline import AdSummary, PipelineResult
from flows.thumbnails import (
    RUN_ARTIFACT_MAX_BYTES,
    THUMBNAIL_WIDTH,
    Thumbnails,
    make_thumbnails,
)


def ad_picture_cell(ad: AdSummary, uri: str | None, *, width: int = THUMBNAIL_WIDTH) -> str:
    """One ad in a markdown table cell: the thumbnail (a link to the full ad when the storage
    gives a URL), else a link, else the storage path as code."""
    alt = medium.markdown_cell(ad.headline or ad.storage_path, limit=120)
    href = medium.markdown_cell(ad.url, limit=len(ad.url)) if ad.url else None
    if uri is not None:
        img = f'<img src="{uri}" width="{width}" alt="{alt}">'
        return f'<a href="{href}">{img}</a>' if href else img
    if href:
        return f'<a href="{href}">open the ad</a>'
    return medium.markdown_code_cell(ad.storage_path)


def thumbnails_note(thumbs: Thumbnails, *, budget: int) -> str:
    """A sentence saying which ads are not shown as pictures and why ("" when all are)."""
    parts = []
    if thumbs.over_budget:
        parts.append(
            f"{thumbs.over_budget} ads are shown as links or paths: this artifact's thumbnails "
            f"are bounded to {budget // 1000} KB"
        )
    if thumbs.unreadable:
        parts.append(f"{thumbs.unreadable} ads could not be read from storage")
    return "; ".join(parts) + ("." if parts else "")


def render_run_markdown(
    title: str, result: PipelineResult, thumbnails: Thumbnails | None = None
) -> str:
    """Markdown for the run's ads: one row per ad (picture, headline, template, status) and one
    per failed template (its error).

    Args:
        title: The job's name (or what made the ads), shown in the heading.
        result: The run's outcomes.
        thumbnails: Pictures by storage path (`make_thumbnails`); ads without one are shown as a
            link or their storage path.
    """
    thumbs = thumbnails or Thumbnails(uris={})
    lines = [
        f"## Ads made: {medium.markdown_heading_text(title)}",
        "",
        "| Ad | Headline | Template | Status |",
        "| --- | --- | --- | --- |",
    ]
    for outcome in result.outcomes:
        template = medium.markdown_code_cell(outcome.template)
        if not outcome.ok:
            error = medium.markdown_cell(outcome.error or "failed")
            lines.append(f"| — | {error} | {template} | ❌ failed |")
            continue
        for ad in outcome.ads:
            picture = ad_picture_cell(ad, thumbs.uris.get(ad.storage_path))
            lines.append(
                f"| {picture} | {medium.markdown_cell(ad.headline)} | {template} | ✅ completed |"
            )
    total = sum(len(o.ads) for o in result.outcomes)
    lines += ["", f"{total} ads from {len(result.outcomes)} templates."]
    note = thumbnails_note(thumbs, budget=RUN_ARTIFACT_MAX_BYTES)
    if note:
        lines += ["", note]
    return "\n".join(lines)


async def publish_run_artifact(
    title: str, result: PipelineResult, storage: AdStorage | None = None
) -> None:
    """Attach the ads table, with thumbnails, to the current flow run.

    Args:
        title: The job's name (or what made the ads).
        result: The run's outcomes.
        storage: Where the ads are; None loads the configured storage (as the run did).
    """
    if storage is None:
        from blocks.storage import load_storage

        storage = await load_storage()
    paths = [ad.storage_path for o in result.outcomes if o.ok for ad in o.ads]
    try:
        thumbs = await make_thumbnails(storage, paths)
    except Exception as exc:  # pictures are a nicety: the table of paths still goes out
        get_run_logger().warning("ad thumbnails not made: %s", type(exc).__name__)
        thumbs = Thumbnails(uris={}, unreadable=len(paths))
    await acreate_markdown_artifact(
        markdown=render_run_markdown(title, result, thumbs),
        key="ads-made",
        description=f"Ads made by {medium.single_line(title)}",
    )


#: Run artifacts made ready and not yet published, by flow run (see `prepare_run_artifact`).
_prepared: dict[uuid.UUID, Callable[[], Awaitable[None]]] = {}
#: Run artifacts being published, by flow run.
_publishing: dict[uuid.UUID, asyncio.Task[None]] = {}


def prepare_run_artifact(
    flow_run_id: uuid.UUID, title: str, result: PipelineResult, storage: AdStorage | None = None
) -> None:
    """Make the run artifact (`publish_run_artifact`) ready; nothing is sent yet.

    The ads are made and recorded before this is called: the table is a view of them. It is
    sent once the run's final state is set (`run_artifact_started`, the first final-state
    hook): sent while the state was being set, its `POST` held the state back by the server's
    time for it (measured: runs ~0.09 s shorter without, the Prefect server being the busiest
    process of a run's end on this machine). The hooks wait for it before the process exits
    (`run_artifact_published`); a run that suspends publishes it first (`await_run_artifact`).
    A failed publication is logged: the ads and the run stand without their table.
    """

    async def publish() -> None:
        try:
            await publish_run_artifact(title, result, storage=storage)
        except Exception as exc:
            get_run_logger().warning("the run's ads table was not published: %s", exc)

    _prepared[flow_run_id] = publish


def start_run_artifact(flow_run_id: uuid.UUID) -> None:
    """Start publishing this run's prepared artifact, without waiting (no-op if none or started).

    Called in the flow run's context (a hook or the flow): the artifact is attached to this run.
    """
    publish = _prepared.pop(flow_run_id, None)
    if publish is not None:
        _publishing[flow_run_id] = asyncio.ensure_future(publish())


async def await_run_artifact(flow_run_id: uuid.UUID) -> None:
    """Publish this run's prepared artifact (started here if it was not) and wait for it (or
    its failure logged); returns at once when none was prepared."""
    start_run_artifact(flow_run_id)
    publishing = _publishing.pop(flow_run_id, None)
    if publishing is not None:
        await asyncio.gather(publishing, return_exceptions=True)


# Prefect calls hooks with keyword arguments: the names must be exactly these.
async def run_artifact_started(flow: object, flow_run: FlowRun, state: object) -> None:
    """First final-state hook: `start_run_artifact` (it goes out beside the other hooks)."""
    start_run_artifact(flow_run.id)


async def run_artifact_published(flow: object, flow_run: FlowRun, state: object) -> None:
    """Final-state hook: `await_run_artifact` for this flow run."""
    await await_run_artifact(flow_run.id)
