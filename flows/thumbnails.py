"""Thumbnails of stored ads as inline JPEG data URIs, and the cache every view draws from.

A thumbnail is a small JPEG inlined as `data:image/jpeg;base64,…`, so the Prefect UI shows it
whatever the storage is — the embedded default's local folder (which no browser can reach)
included. The run's ad generation starts each ad's thumbnail as the ad is stored, off the event
loop and without waiting for it (`remember`); the run artifact and the job board then find it
here instead of reading every ad back and decoding it after the last template.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from blocks.storage import AdStorage

#: Longest side of a run artifact's thumbnails, in pixels (CSS pixels in the UI as well).
THUMBNAIL_WIDTH = 160
#: Largest data URI of one thumbnail, in bytes (a 160 px JPEG of a 1080 px ad is ~6-9 KB).
THUMBNAIL_MAX_BYTES = 16_000
#: Largest total of thumbnail data URIs in one run artifact, in bytes (~40 ads of 160 px).
RUN_ARTIFACT_MAX_BYTES = 400_000
#: Longest side of a job board thumbnail, in pixels.
BOARD_THUMBNAIL_WIDTH = 64
#: Largest data URI of one board thumbnail, in bytes (a 64 px JPEG is ~2-3 KB).
BOARD_THUMBNAIL_MAX_BYTES = 8_000
#: What `remember` makes of every ad a run stores: (size, largest data URI) for the run artifact
#: and for the job board, from one decode of the image.
_REMEMBERED = (
    (THUMBNAIL_WIDTH, THUMBNAIL_MAX_BYTES),
    (BOARD_THUMBNAIL_WIDTH, BOARD_THUMBNAIL_MAX_BYTES),
)
#: JPEG qualities tried in turn before a thumbnail is shrunk to half its size.
_QUALITIES = (72, 50)
#: Thumbnails made in this process, by (storage path, size): a stored ad never changes, and the
#: job board re-renders the same last-run ads after every change. Bounded (~10 KB each).
_CACHE: OrderedDict[tuple[str, int], str | None] = OrderedDict()
_CACHE_MAX = 512
#: Thumbnails being made (`remember`), by (storage path, size).
_MAKING: dict[tuple[str, int], asyncio.Future[str | None]] = {}
#: Storage reads in flight at once while making thumbnails.
_READS_IN_FLIGHT = 4


def _cache_put(key: tuple[str, int], uri: str | None) -> None:
    _CACHE[key] = uri
    while len(_CACHE) > _CACHE_MAX:
        _CACHE.popitem(last=False)


def remember(path: str, image: bytes) -> None:
    """Start making the thumbnails of an ad just stored at `path`; returns at once.

    Called by ad generation with the bytes it holds, so `make_thumbnails` finds the run's ads
    here (waiting for one still being made): the run artifact's (`THUMBNAIL_WIDTH`) and the job
    board's (`BOARD_THUMBNAIL_WIDTH`), both from one decode. Decoding and encoding run in a
    worker thread (Pillow releases the GIL for both), and nobody waits for them but the views:
    the last template's ad run is recorded, and the run ends, without waiting for its pictures.
    A thumbnail that cannot be made is left to `make_thumbnails`, which tries again from storage.
    """
    making = asyncio.ensure_future(asyncio.to_thread(thumbnail_data_uris, image, _REMEMBERED))
    keys = [(path, size) for size, _max in _REMEMBERED]
    for index, key in enumerate(keys):
        one = asyncio.ensure_future(_pick(making, index))
        _MAKING[key] = one
        one.add_done_callback(_settle(key))


async def _pick(making: asyncio.Future[list[str | None]], index: int) -> str | None:
    return (await asyncio.shield(making))[index]


def _settle(key: tuple[str, int]) -> Callable[[asyncio.Future[str | None]], None]:
    def done(task: asyncio.Future[str | None]) -> None:
        if _MAKING.get(key) is task:
            del _MAKING[key]
        if not task.cancelled() and task.exception() is None:
            _cache_put(key, task.result())

    return done


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
    return thumbnail_data_uris(image, ((size, max_bytes),))[0]


def thumbnail_data_uris(image: bytes, specs: Sequence[tuple[int, int]]) -> list[str | None]:
    """`thumbnail_data_uri` for several (size, max_bytes) at once, decoding the image once.

    Returns:
        One data URI (or None) per spec, in order; all None when the bytes are not an image.
    """
    if not specs:
        return []
    try:
        with Image.open(io.BytesIO(image)) as opened:
            largest = max(size for size, _max in specs)
            opened.draft("RGB", (largest, largest))  # JPEG sources decode at a reduced scale
            picture = _flatten(opened)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return [None] * len(specs)
    return [_encode(picture, size, max_bytes) for size, max_bytes in specs]


def _encode(picture: Image.Image, size: int, max_bytes: int) -> str | None:
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
        if (making := _MAKING.get(key)) is not None:
            with contextlib.suppress(Exception):  # not made: read from storage below
                await asyncio.shield(making)
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
        _cache_put(key, uri)
        return uri

    made = await asyncio.gather(*(one(p) for p in ordered))
    return within_budget(zip(ordered, made, strict=True), budget=budget)


def within_budget(pictures: Iterable[tuple[str, str | None]], *, budget: int) -> Thumbnails:
    """Keep (storage path, data URI or None) pairs first come first served within `budget`
    bytes; a None counts as unreadable, a URI past the budget as over budget."""
    result = Thumbnails(uris={})
    spent = 0
    for path, uri in pictures:
        if uri is None:
            result.unreadable += 1
        elif spent + len(uri) > budget:
            result.over_budget += 1
        else:
            result.uris[path] = uri
            spent += len(uri)
    return result


async def remembered(path: str, size: int) -> str | None:
    """The thumbnail `remember` made (or is making) of `path` at `size`, or None when this
    process has none: nothing is read from storage."""
    key = (path, size)
    if (making := _MAKING.get(key)) is not None:
        with contextlib.suppress(Exception):
            return await asyncio.shield(making)
        return None
    return _CACHE.get(key)
