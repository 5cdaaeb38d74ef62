"""The run artifact: every ad a run made, as a picture, with its headline and template.

Thumbnails are small JPEGs inlined as `data:image/jpeg;base64,…` URIs, so the Prefect UI shows
them whatever the storage is — the embedded default's local folder (which no browser can reach)
included. Checked in headless Chromium against Prefect 3.9's UI (tests/ui): its markdown renderer
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
import base64
import io
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError
from prefect import get_run_logger
from prefect.artifacts import acreate_markdown_artifact

from blocks.storage import AdStorage
from domain import text as medium
from flows.pipeline import AdSummary, PipelineResult

#: Longest side of a run artifact's thumbnails, in pixels (CSS pixels in the UI as well).
THUMBNAIL_WIDTH = 160
#: Largest data URI of one thumbnail, in bytes (a 160 px JPEG of a 1080 px ad is ~6-9 KB).
THUMBNAIL_MAX_BYTES = 16_000
#: Largest total of thumbnail data URIs in one run artifact, in bytes (~40 ads of 160 px).
RUN_ARTIFACT_MAX_BYTES = 400_000
#: JPEG qualities tried in turn before a thumbnail is shrunk to half its size.
_QUALITIES = (72, 50)
#: Thumbnails made in this process, by (storage path, size): a stored ad never changes, and the
#: job board re-renders the same last-run ads after every change. Bounded (~10 KB each).
_CACHE: OrderedDict[tuple[str, int], str | None] = OrderedDict()
_CACHE_MAX = 512
#: Storage reads in flight at once while making thumbnails.
_READS_IN_FLIGHT = 4


def thumbnail_data_uri(
    image: bytes, *, size: int = THUMBNAIL_WIDTH, max_bytes: int = THUMBNAIL_MAX_BYTES
) -> str | None:
    """A `data:image/jpeg;base64,…` thumbnail of an image, or None when it cannot be made.

    Args:
        image: The image file's bytes (any format Pillow reads: PNG, JPEG, WebP, GIF, …).
        size: Longest side of the thumbnail, in pixels (aspect ratio kept, never enlarged).
        max_bytes: Largest data URI, in bytes. Lower qualities, then half the size, are tried
            before giving up.

    Returns:
        The data URI, or None when the bytes are not a readable image or no attempt fits.
    """
    try:
        with Image.open(io.BytesIO(image)) as opened:
            opened.draft("RGB", (size, size))  # JPEG sources decode at a reduced scale
            picture = _flatten(opened)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
    for side in (size, max(16, size // 2)):
        small = picture.copy()
        small.thumbnail((side, side))
        for quality in _QUALITIES:
            out = io.BytesIO()
            small.save(out, "JPEG", quality=quality, optimize=True)
            uri = "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")
            if len(uri) <= max_bytes:
                return uri
    return None


def _flatten(picture: Image.Image) -> Image.Image:
    """RGB on white: JPEG has no alpha, and a transparent ad must not turn black."""
    if picture.mode in ("RGBA", "LA") or (picture.mode == "P" and "transparency" in picture.info):
        rgba = picture.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return picture.convert("RGB")


@dataclass
class Thumbnails:
    """Thumbnails made for a set of stored ads, within a byte budget.

    Attributes:
        uris: Data URI by storage path, for the ads that got one.
        over_budget: How many ads were left without one because the budget was spent.
        unreadable: How many ads could not be read or drawn (missing file, not an image, or no
            thumbnail under the per-thumbnail bound).
    """

    uris: dict[str, str]
    over_budget: int = 0
    unreadable: int = 0


async def make_thumbnails(
    storage: AdStorage,
    paths: Iterable[str],
    *,
    size: int = THUMBNAIL_WIDTH,
    max_bytes: int = THUMBNAIL_MAX_BYTES,
    budget: int = RUN_ARTIFACT_MAX_BYTES,
) -> Thumbnails:
    """Read stored ads and make their thumbnails, first come first served within `budget`.

    Args:
        storage: Where the ads are stored.
        paths: Storage paths, in the order they are shown (earlier ones win the budget).
        size: Longest side of each thumbnail, in pixels.
        max_bytes: Largest data URI of one thumbnail, in bytes.
        budget: Largest total of data URIs, in bytes.

    Returns:
        The thumbnails that fit. Never raises for a missing or broken file: that ad is counted
        in `unreadable` (and shown as a link or path by the caller).
    """
    ordered = list(dict.fromkeys(paths))
    gate = asyncio.Semaphore(_READS_IN_FLIGHT)

    async def one(path: str) -> str | None:
        key = (path, size)
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        async with gate:
            try:
                data = await storage.read(path)
            except Exception:  # missing or unreadable: the caller falls back to a link
                return None
        # Decoding and re-encoding is CPU work: off the event loop.
        uri = await asyncio.to_thread(thumbnail_data_uri, data, size=size, max_bytes=max_bytes)
        _CACHE[key] = uri
        while len(_CACHE) > _CACHE_MAX:
            _CACHE.popitem(last=False)
        return uri

    made = await asyncio.gather(*(one(p) for p in ordered))
    result = Thumbnails(uris={})
    spent = 0
    for path, uri in zip(ordered, made, strict=True):
        if uri is None:
            result.unreadable += 1
        elif spent + len(uri) > budget:
            result.over_budget += 1
        else:
            result.uris[path] = uri
            spent += len(uri)
    return result


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
