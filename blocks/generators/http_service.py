"""Ads from a team's own ad-creation service, over a small documented JSON protocol.

For a team that already runs an ad service (its own model, a design tool, a render farm): the
block POSTs one request per variation to the configured URL and expects one image back. The
headline and palette are resolved here, with the same `pick_headline`/`pick_palette` every other
generator uses, so a job's `content_source` and `color_mode` mean the same thing whatever
generator it names; the raw product data and parameters are sent too for services that do
their own copywriting.

Request (`POST <url>`, `Content-Type: application/json`, `<auth_header>: <auth_scheme> <token>`,
`Idempotency-Key: <request_id>`):

```json
{
  "schema": "ad-scheduler.generate/v1",
  "request_id": "9f2c…",               // stable per template × product × variation × parameters
  "product": {
    "name": "Glow Serum", "description": "…", "brand_name": "Lumi",
    "key_benefits": ["Hydrates for 24h"], "brand_colors": ["#112233", "#ffcc00"],
    "hooks": ["Skin that glows"]
  },
  "template": {
    "name": "spring/banner-01.png",      // the template's storage name (its reference)
    "copy": "Spring sale",               // the template's own copy, "" when unknown
    "image": {"mime_type": "image/png", "base64": "iVBORw0…"}
  },
  "product_image": {"mime_type": "image/jpeg", "base64": "…"},   // or null
  "parameters": {
    "content_source": "hooks",           // hooks | benefits | recreate_template
    "color_mode": "brand",               // original | brand | complementary
    "image_mode": "auto",                // auto | specific
    "variations": 3
  },
  "content": {
    "headline": "Skin that glows",       // pick_headline(): render this text
    "palette": ["#112233", "#ffcc00", "#ffffff"]   // background, accent, text; null = keep
  },                                               // the template's own colours (original)
  "variation": {"index": 0, "count": 3}, // 0-based index of this call within the ad run
  "output": {"width": 1080, "height": 1080}
}
```

Success (`200`): one image, inline or by URL (`mime_type` is optional, the bytes are checked):

```json
{"image": {"base64": "iVBORw0…", "mime_type": "image/png"}, "headline": "Skin that glows"}
{"image": {"url": "https://cdn.example.com/ads/abc.png"}}
```

A URL may be relative to the service URL. It is downloaded at once (up to
`max_download_bytes`); the auth header is sent with the download only when the URL has the
service's own origin, never to a third-party host. `headline` is optional (the headline the
service actually rendered; defaults to `content.headline`).

Errors: any non-200 status, optionally with
`{"error": {"message": "…", "retryable": true, "retry_after": 12}}`. 408/429/500/502/503/504,
timeouts and refused connections are retried (after `Retry-After` or `error.retry_after` when
given); 401/403 mean the token is wrong; 404 means the URL is wrong; other statuses are permanent
unless the body says `"retryable": true`. A 200 without an image is a permanent failure.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
from pydantic import Field, SecretStr

from blocks.generators.base import (
    AdGenerator,
    AdImage,
    AdRequest,
    GenerationError,
    RejectedRequestError,
)
from blocks.generators.content import pick_headline, pick_palette
from blocks.generators.provider_http import (
    RETRYABLE_STATUSES,
    ad_image_from_bytes,
    decode_base64,
    encode_base64,
    json_body,
    redact,
    retry_after_header,
    shared_ssl_context,
    sniff_mime,
    transport_error,
)

SCHEMA = "ad-scheduler.generate/v1"
PROVIDER = "The ad service"


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return (parts.scheme, parts.hostname or "", port)


def _safe_url(url: str) -> str:
    """A URL without its query or fragment (presigned URLs carry signatures there)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def _image_payload(data: bytes) -> dict[str, str]:
    return {"mime_type": sniff_mime(data), "base64": encode_base64(data)}


def request_document(request: AdRequest) -> dict[str, Any]:
    """The JSON document sent to the ad service for one variation (see the module docstring).

    Args:
        request: The variation to generate.

    Returns:
        The request document, ready for `json=`.
    """
    product = request.product
    parameters = request.parameters
    palette = None if parameters.color_mode == "original" else list(pick_palette(request)[:3])
    document: dict[str, Any] = {
        "schema": SCHEMA,
        "product": {
            "name": product.name,
            "description": product.description,
            "brand_name": product.brand_name,
            "key_benefits": list(product.key_benefits),
            "brand_colors": list(product.brand_colors),
            "hooks": list(product.hooks),
        },
        "template": {
            "name": request.template_name,
            "copy": request.template_copy,
            "image": _image_payload(request.template_image),
        },
        "product_image": (
            _image_payload(request.product_image) if request.product_image is not None else None
        ),
        "parameters": {
            "content_source": parameters.content_source,
            "color_mode": parameters.color_mode,
            "image_mode": parameters.image_mode,
            "variations": parameters.variations,
        },
        "content": {"headline": pick_headline(request), "palette": palette},
        "variation": {"index": request.variation_index, "count": parameters.variations},
        "output": {"width": request.width, "height": request.height},
    }
    identity = json.dumps(
        [
            document["product"],
            document["template"],
            document["product_image"],
            document["parameters"],
            document["variation"],
            document["output"],
        ],
        sort_keys=True,
    )
    document["request_id"] = hashlib.sha256(identity.encode()).hexdigest()[:32]
    return document


class HttpAdGenerator(AdGenerator):
    """Generates ads by calling a team's own ad service (JSON over HTTP, see the module docs).

    Attributes:
        url: The service endpoint that receives the POST.
        auth_token: Secret sent in the auth header.
        auth_header: Name of the auth header.
        auth_scheme: Prefix of the header value (`Bearer`), or empty to send the token alone.
        timeout: Seconds to wait for one generation.
        download_timeout: Seconds to wait for an image the service returned as a URL.
        max_download_bytes: Largest image accepted from a URL.

    Example:
        ```python
        from blocks.generators.http_service import HttpAdGenerator
        generator = HttpAdGenerator.load("BLOCK_NAME")
        ```
    """

    _block_type_name = "HTTP Ad Generator"
    _block_type_slug = "http-ad-generator"
    _documentation_url = "https://docs.prefect.io/v3/develop/blocks"  # type: ignore[assignment]

    provider_limit: str = Field(
        default="ad-service",
        description="Name of the global concurrency limit shared by every worker.",
    )
    url: str = Field(description="Endpoint of the ad service that receives the POST.")
    auth_token: SecretStr = Field(description="Secret sent in the auth header.")
    auth_header: str = Field(default="Authorization", description="Name of the auth header.")
    auth_scheme: str = Field(
        default="Bearer", description="Prefix of the header value, or empty for the token alone."
    )
    timeout: float = Field(default=120.0, gt=0, description="Seconds to wait for one generation.")
    download_timeout: float = Field(
        default=60.0, gt=0, description="Seconds to wait for an image returned as a URL."
    )
    max_download_bytes: int = Field(
        default=20_000_000, gt=0, description="Largest image accepted from a URL, in bytes."
    )

    def _auth_headers(self) -> dict[str, str]:
        token = self.auth_token.get_secret_value()
        value = f"{self.auth_scheme} {token}" if self.auth_scheme else token
        return {self.auth_header: value}

    def get_client(self) -> httpx.AsyncClient:
        """An HTTP client with generous timeouts and no default auth; close it after use.

        The auth header is added per request (`_auth_headers`) so a download from another host
        never carries it.
        """
        return httpx.AsyncClient(
            verify=shared_ssl_context(),
            timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
            follow_redirects=False,
        )

    async def generate(self, request: AdRequest) -> AdImage:
        """Generate one ad variation with the team's service.

        Args:
            request: The variation to generate.

        Returns:
            The generated ad (not yet stored).

        Raises:
            GenerationError: No image; `retryable` says whether a retry can help.
        """
        document = request_document(request)
        headers = {**self._auth_headers(), "Idempotency-Key": document["request_id"]}
        async with self.get_client() as client:
            try:
                response = await client.post(self.url, json=document, headers=headers)
            except httpx.TransportError as error:
                raise transport_error(PROVIDER, error, self.timeout) from None
            if response.status_code != 200:
                raise self._http_error(response, what="generation")
            payload = json_body(response)
            payload = payload if isinstance(payload, dict) else {}
            image = payload.get("image")
            if not isinstance(image, dict):
                raise GenerationError(
                    f"{PROVIDER} answered 200 without an image object; see the response format "
                    "in blocks/generators/http_service.py"
                )
            headline = str(payload.get("headline") or document["content"]["headline"])
            if image.get("base64") or image.get("data"):
                data = decode_base64(image.get("base64") or image.get("data"), PROVIDER)
            elif isinstance(image.get("url"), str) and image["url"]:
                data = await self._download(client, image["url"])
            else:
                raise GenerationError(f"{PROVIDER} answered 200 with neither base64 nor url")
        return ad_image_from_bytes(data, provider=PROVIDER, headline=headline)

    async def _download(self, client: httpx.AsyncClient, url: str) -> bytes:
        target = urljoin(self.url, url)
        if urlsplit(target).scheme not in ("http", "https"):
            raise GenerationError(f"{PROVIDER} returned an image URL that is not http(s)")
        headers = self._auth_headers() if _origin(target) == _origin(self.url) else {}
        try:
            # Redirects (CDNs, presigned URLs) are followed only when no secret is sent.
            async with client.stream(
                "GET",
                target,
                headers=headers,
                timeout=self.download_timeout,
                follow_redirects=not headers,
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise self._http_error(response, what=f"download of {_safe_url(target)}")
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > self.max_download_bytes:
                        raise GenerationError(
                            f"the image at {_safe_url(target)} is larger than "
                            f"max_download_bytes ({self.max_download_bytes})"
                        )
                    chunks.append(chunk)
        except httpx.TransportError as error:
            raise transport_error(
                f"The image URL {_safe_url(target)}", error, self.download_timeout
            ) from None
        return b"".join(chunks)

    def _http_error(self, response: httpx.Response, *, what: str) -> GenerationError:
        status = response.status_code
        payload = json_body(response)
        error = payload.get("error") if isinstance(payload, dict) else None
        error = error if isinstance(error, dict) else {}
        raw = error.get("message") or (response.text if payload is None else "") or ""
        message = redact(str(raw), [self.auth_token.get_secret_value()]) or response.reason_phrase
        retry_after = retry_after_header(response)
        if retry_after is None and isinstance(error.get("retry_after"), int | float):
            retry_after = max(0.0, float(error["retry_after"]))
        retryable = error.get("retryable")
        if not isinstance(retryable, bool):
            retryable = status in RETRYABLE_STATUSES
        if status in (401, 403):
            fix = "the service rejected the credentials: check the block's auth_token, "
            fix += "auth_header and auth_scheme"
        elif status == 404:
            fix = "nothing answers at this URL: check the block's url"
        elif status == 429:
            fix = "rate limited: lower the block's max_in_flight/requests_per_minute if it repeats"
        elif retryable:
            fix = "temporarily unavailable"
        else:
            # A permanent refusal of this request's content: the template is set aside.
            return RejectedRequestError(
                f"{PROVIDER} {what} failed with HTTP {status}: the service refused this "
                f"request. It said: {message}"
            )
        return GenerationError(
            f"{PROVIDER} {what} failed with HTTP {status}: {fix}. It said: {message}",
            retryable=retryable,
            retry_after=retry_after if retryable else None,
        )
