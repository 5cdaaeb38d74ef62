"""Helpers shared by the HTTP generators (Gemini and a team's own ad service).

Three concerns live here so both generators classify failures the same way:

* which HTTP statuses a retry can fix (429 and the transient 5xx) and how long the server asked
  us to wait (`Retry-After`, Gemini's `google.rpc.RetryInfo.retryDelay`);
* turning transport failures (timeouts, refused connections) into retryable `GenerationError`s
  whose text names the provider but carries no request headers;
* checking that returned bytes really are an image and reading its size.

Secrets never reach an exception: every text that came from a server goes through `redact`
(the project's one redactor, `domain.redact`) before it is put into a message, in case the
server echoed a header back. `Retry-After` is read by `domain.retry` (both RFC 9110 forms).
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import re
import ssl
from collections.abc import Iterable
from typing import Any

import httpx
from PIL import Image, UnidentifiedImageError

from blocks.generators.base import AdImage, GenerationError
from domain import redact as redaction
from domain.retry import RETRYABLE_STATUSES, retry_after_from_headers

__all__ = ["RETRYABLE_STATUSES", "redact", "retry_after_header"]

#: Longest server text quoted in an error message.
MAX_QUOTED_CHARS = 300

_PIL_TO_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """The process's one TLS context for provider clients (what httpx makes by default).

    A client per request is what the generators use; building its context reads the CA bundle
    each time (tens of ms of CPU per request), so they share this one.
    """
    return httpx.create_ssl_context()


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with its secrets hidden, on one line, cut to `MAX_QUOTED_CHARS` (`domain.redact`)."""
    return redaction.redact(text, secrets, limit=MAX_QUOTED_CHARS, one_line=True)


def parse_duration(value: object) -> float | None:
    """Seconds from a protobuf duration string such as `"27s"` or `"1.5s"`, else None."""
    if not isinstance(value, str):
        return None
    match = _DURATION.match(value)
    return float(match.group(1)) if match else None


def retry_after_header(response: httpx.Response) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date), else None."""
    return retry_after_from_headers(dict(response.headers))


def json_body(response: httpx.Response) -> Any:
    """The response's JSON, or None when the body is not JSON."""
    try:
        return response.json()
    except ValueError:
        return None


def transport_error(provider: str, error: httpx.TransportError, timeout: float) -> GenerationError:
    """A retryable error for a timeout or a connection failure (no headers, no URL query)."""
    if isinstance(error, httpx.TimeoutException):
        return GenerationError(
            f"{provider} did not answer within {timeout:g}s ({type(error).__name__}); "
            "raise the block's timeout if this repeats",
            retryable=True,
        )
    return GenerationError(
        f"{provider} could not be reached ({type(error).__name__}); check the block's URL and "
        "that the service is up",
        retryable=True,
    )


def decode_base64(data: object, provider: str) -> bytes:
    """Bytes of a base64 string returned by a provider.

    Raises:
        GenerationError: Not a string or not valid base64 (not retryable).
    """
    if not isinstance(data, str) or not data:
        raise GenerationError(f"{provider} returned an image without base64 data")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise GenerationError(f"{provider} returned image data that is not valid base64") from None


def encode_base64(data: bytes) -> str:
    """Base64 text of `data` (standard alphabet, padded)."""
    return base64.b64encode(data).decode("ascii")


def sniff_mime(data: bytes, default: str = "image/png") -> str:
    """The MIME type of an input image from its magic bytes (PNG, JPEG, WebP, GIF)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return default


def ad_image_from_bytes(data: bytes, *, provider: str, headline: str) -> AdImage:
    """An `AdImage` from bytes a provider returned, after checking they are an image.

    The content type and size are read from the image itself, not from what the provider
    declared, so a mislabelled or truncated image is caught here rather than by a mail client.

    Raises:
        GenerationError: The bytes are not a readable image (not retryable).
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
            kind, (width, height) = image.format, image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise GenerationError(f"{provider} returned bytes that are not a readable image") from None
    content_type = _PIL_TO_MIME.get(kind or "")
    if content_type is None:
        raise GenerationError(f"{provider} returned an image in an unsupported format ({kind})")
    return AdImage(
        data=data, content_type=content_type, width=width, height=height, headline=headline
    )
