"""Ads from Google's Gemini image model ("Nano Banana", `gemini-2.5-flash-image`).

One `generateContent` call per variation: the prompt (built from the product brief and the job's
content source, colour mode and image mode, through the shared `pick_headline`/`pick_palette`),
the template image and the product image go in; one inline image comes back.

REST shape (https://ai.google.dev/api/generate-content):

    POST {base_url}/models/{model}:generateContent
    x-goog-api-key: <key>
    {"contents": [{"role": "user", "parts": [
        {"text": "<prompt>"},
        {"inline_data": {"mime_type": "image/png", "data": "<template, base64>"}},
        {"inline_data": {"mime_type": "image/png", "data": "<product photo, base64>"}}]}],
     "generationConfig": {"responseModalities": ["TEXT", "IMAGE"],
                          "imageConfig": {"aspectRatio": "1:1"}}}

    200 {"candidates": [{"content": {"parts": [{"inlineData": {"mimeType", "data"}}]},
                         "finishReason": "STOP"}]}

How failures are classified (https://ai.google.dev/gemini-api/docs/troubleshooting):

* a 200 without an image (`promptFeedback.blockReason`, a `SAFETY`/`IMAGE_SAFETY`/`NO_IMAGE`/…
  finish, or text only) is a permanent failure that quotes the reason;
* 429 `RESOURCE_EXHAUSTED` is retryable after the server's `RetryInfo.retryDelay` when given;
* 408/500/502/503/504, timeouts and refused connections are retryable;
* other 4xx are permanent and say what to fix (the key, the model name, billing, the request).

The key travels in the `x-goog-api-key` header, never in the URL, and is never put into an
exception, a log line or the block's repr.
"""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

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
    parse_duration,
    redact,
    retry_after_header,
    shared_ssl_context,
    sniff_mime,
    transport_error,
)

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"
DEFAULT_MODEL = "gemini-2.5-flash-image"
PROVIDER = "Gemini"

AspectRatio = Literal["1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"]
ASPECT_RATIOS: tuple[str, ...] = get_args(AspectRatio)

_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"

CONTENT_INSTRUCTIONS = {
    "hooks": "The headline is one of the product's own marketing hooks.",
    "benefits": "The headline states one of the product's key benefits.",
    "recreate_template": (
        "Recreate the template's own copy for this product: keep its tone, length and "
        "structure, and name the product."
    ),
}


def closest_aspect_ratio(width: int, height: int) -> str:
    """The supported Gemini aspect ratio closest to `width`×`height` (compared in log space)."""
    target = math.log(width / height)

    def distance(ratio: str) -> float:
        w, h = ratio.split(":")
        return abs(math.log(int(w) / int(h)) - target)

    return min(ASPECT_RATIOS, key=distance)


def _palette_instruction(request: AdRequest) -> str:
    mode = request.parameters.color_mode
    if mode == "original":
        return "Colours: keep the template's original colour palette."
    background, accent, text = pick_palette(request)[:3]
    source = "the brand colours" if mode == "brand" else "the complements of the brand colours"
    return (
        f"Colours: recolour the ad with {source}: background {background}, accent {accent}, "
        f"text {text}. Do not introduce other dominant colours."
    )


def _image_instruction(request: AdRequest) -> str:
    if request.product_image is None:
        return (
            "There is no product photo: show the product as described, without inventing a "
            "logo or a label text."
        )
    how = (
        "chosen by the marketer; use this exact photo"
        if request.parameters.image_mode == "specific"
        else "picked automatically from the product's photos"
    )
    return (
        f"The SECOND attached image is the product photo ({how}). Put this product into the ad "
        "as the hero, unchanged: same shape, packaging, label and logo."
    )


def build_prompt(request: AdRequest, aspect_ratio: str) -> str:
    """The text part of the Gemini request for one variation.

    Content comes from `pick_headline` and colours from `pick_palette`, the same definitions the
    offline renderer and the HTTP service generator use, so a job means the same thing whatever
    generator it names.

    Args:
        request: The variation to generate.
        aspect_ratio: The output aspect ratio sent in the image config.

    Returns:
        The prompt.
    """
    product = request.product
    parameters = request.parameters
    brand = f" by {product.brand_name}" if product.brand_name else ""
    lines = [
        f'Create one finished advertising image for the product "{product.name}"{brand}.',
        f'The FIRST attached image is the ad template "{request.template_name}": keep its '
        "layout, composition, typography style and logo placement.",
        _image_instruction(request),
    ]
    if product.description:
        lines.append(f"Product description: {product.description}")
    if product.key_benefits:
        lines.append("Key benefits: " + "; ".join(product.key_benefits) + ".")
    if product.brand_colors:
        lines.append("Brand colours: " + ", ".join(product.brand_colors) + ".")
    if parameters.content_source == "recreate_template" and request.template_copy:
        lines.append(f'Template copy: "{request.template_copy}".')
    lines += [
        CONTENT_INSTRUCTIONS[parameters.content_source],
        f'Headline, rendered exactly as written: "{pick_headline(request)}".',
        _palette_instruction(request),
        f"This is variation {request.variation_index + 1} of {parameters.variations}: vary the "
        "composition and emphasis so the variations differ visibly, within these rules.",
        f"Output: a single image, aspect ratio {aspect_ratio}; no text reply is needed.",
    ]
    return "\n".join(lines)


class GeminiImageGenerator(AdGenerator):
    """Generates ads with Gemini's image model (`generateContent` with inline images).

    Attributes:
        api_key: Gemini API key (sent in the `x-goog-api-key` header).
        model: Model id, e.g. `gemini-2.5-flash-image`.
        base_url: API root up to the version, e.g. `https://generativelanguage.googleapis.com/v1beta`.
        aspect_ratio: Output aspect ratio; None picks the one closest to the requested size.
        timeout: Seconds to wait for one generation.

    Example:
        ```python
        from blocks.generators.gemini import GeminiImageGenerator
        generator = GeminiImageGenerator.load("BLOCK_NAME")
        ```
    """

    _block_type_name = "Gemini Image Generator"
    _block_type_slug = "gemini-image-generator"
    _documentation_url = "https://ai.google.dev/gemini-api/docs/image-generation"  # type: ignore[assignment]

    provider_limit: str = Field(
        default="gemini-image",
        description="Name of the global concurrency limit shared by every worker.",
    )
    max_in_flight: int = Field(
        default=4, ge=1, description="Requests in flight at once across all workers."
    )
    requests_per_minute: int | None = Field(
        default=10, ge=1, description="Request rate across all workers (the project's IPM)."
    )
    api_key: SecretStr = Field(description="Gemini API key.")
    model: str = Field(default=DEFAULT_MODEL, min_length=1, description="Gemini image model id.")
    base_url: str = Field(default=DEFAULT_BASE_URL, description="API root URL up to the version.")
    aspect_ratio: AspectRatio | None = Field(
        default=None, description="Output aspect ratio; none picks the closest to the ad size."
    )
    timeout: float = Field(
        default=120.0, gt=0, description="Seconds to wait for one generation request."
    )

    def get_client(self) -> httpx.AsyncClient:
        """An HTTP client for the Gemini API, authenticated by header; close it after use."""
        return httpx.AsyncClient(
            verify=shared_ssl_context(),
            base_url=self.base_url.rstrip("/") + "/",
            headers={"x-goog-api-key": self.api_key.get_secret_value()},
            timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
        )

    def request_body(self, request: AdRequest) -> dict[str, Any]:
        """The `generateContent` JSON body for one variation."""
        aspect = self.aspect_ratio or closest_aspect_ratio(request.width, request.height)
        parts: list[dict[str, Any]] = [{"text": build_prompt(request, aspect)}]
        for image in (request.template_image, request.product_image):
            if image is not None:
                parts.append(
                    {"inline_data": {"mime_type": sniff_mime(image), "data": encode_base64(image)}}
                )
        return {
            "contents": [{"role": "user", "parts": parts}],
            "generationConfig": {
                "responseModalities": ["TEXT", "IMAGE"],
                "imageConfig": {"aspectRatio": aspect},
            },
        }

    async def generate(self, request: AdRequest) -> AdImage:
        """Generate one ad variation with Gemini.

        Args:
            request: The variation to generate.

        Returns:
            The generated ad (not yet stored).

        Raises:
            GenerationError: Gemini gave no image; `retryable` says whether a retry can help.
        """
        body = self.request_body(request)
        try:
            async with self.get_client() as client:
                model = self.model.removeprefix("models/")
                response = await client.post(f"models/{model}:generateContent", json=body)
        except httpx.TransportError as error:
            raise transport_error(PROVIDER, error, self.timeout) from None
        if response.status_code != 200:
            raise self._http_error(response)
        return self._image_from(response, pick_headline(request))

    def _quote(self, text: str) -> str:
        return redact(text, [self.api_key.get_secret_value()])

    def _image_from(self, response: httpx.Response, headline: str) -> AdImage:
        payload = json_body(response)
        if not isinstance(payload, dict):
            raise GenerationError(
                f"{PROVIDER} answered 200 with a body that is not JSON", retryable=True
            )
        feedback = payload.get("promptFeedback") or {}
        candidates = payload.get("candidates") or []
        if not candidates:
            reason = feedback.get("blockReason") or "no candidates"
            message = feedback.get("blockReasonMessage")
            detail = f": {self._quote(str(message))}" if message else ""
            raise GenerationError(
                f"{PROVIDER} blocked the prompt (blockReason={reason}){detail}; change the "
                "product copy or template that triggered it"
            )
        texts: list[str] = []
        for candidate in candidates:
            parts = (candidate.get("content") or {}).get("parts") or []
            for part in parts:
                inline = part.get("inlineData") or part.get("inline_data")
                if inline:
                    data = decode_base64(inline.get("data"), PROVIDER)
                    return ad_image_from_bytes(data, provider=PROVIDER, headline=headline)
                if part.get("text"):
                    texts.append(str(part["text"]))
        finish = candidates[0].get("finishReason") or "unknown"
        if finish != "STOP":
            said = f"; it said: {self._quote(' '.join(texts))}" if texts else ""
            raise GenerationError(
                f"{PROVIDER} returned no image (finishReason={finish}){said}; safety and "
                "NO_IMAGE finishes are permanent for this prompt and template"
            )
        if not texts:
            raise GenerationError(f"{PROVIDER} returned neither an image nor text")
        raise GenerationError(
            f"{PROVIDER} returned text but no image: {self._quote(' '.join(texts))}"
        )

    def _http_error(self, response: httpx.Response) -> GenerationError:
        status = response.status_code
        payload = json_body(response)
        error = payload.get("error") if isinstance(payload, dict) else None
        error = error if isinstance(error, dict) else {}
        rpc_status = str(error.get("status") or "")
        message = self._quote(str(error.get("message") or response.reason_phrase or ""))
        details = [d for d in error.get("details") or [] if isinstance(d, dict)]
        reasons = {str(d.get("reason")) for d in details if d.get("@type") == _ERROR_INFO}
        label = f"{status} {rpc_status}".strip()

        if status in RETRYABLE_STATUSES:
            retry_after = next(
                (
                    parse_duration(d.get("retryDelay"))
                    for d in details
                    if d.get("@type") == _RETRY_INFO
                    and parse_duration(d.get("retryDelay")) is not None
                ),
                None,
            )
            if retry_after is None:
                retry_after = retry_after_header(response)
            if status == 429:
                hint = (
                    "rate limit or quota exceeded; if this repeats, lower the block's "
                    "max_in_flight/requests_per_minute or raise the project's quota"
                )
            else:
                hint = "Gemini is temporarily unavailable"
            return GenerationError(
                f"{PROVIDER} {label}: {hint}: {message}", retryable=True, retry_after=retry_after
            )
        if "API_KEY_INVALID" in reasons or (status == 400 and "api key" in message.lower()):
            fix = "the API key was rejected: save a valid key in the block's api_key"
        elif status == 401:
            fix = "not authenticated: save a valid key in the block's api_key"
        elif status == 403:
            fix = (
                f"the key may not call model '{self.model}': enable the Generative Language "
                "API for the key's project, or use a key that has access"
            )
        elif status == 404:
            fix = (
                f"model '{self.model}' was not found at {self.base_url}: check the block's "
                f"model (e.g. {DEFAULT_MODEL}) and base_url (ending in /v1beta)"
            )
        elif rpc_status == "FAILED_PRECONDITION" or "billing" in message.lower():
            fix = (
                "the project cannot use this model as configured: enable billing on the key's "
                "Google Cloud project (the free tier may not include image models or your region)"
            )
        elif status == 413:
            fix = "the request is too large: use smaller template or product images"
            return RejectedRequestError(f"{PROVIDER} {label}: {fix}. Gemini said: {message}")
        else:
            fix = "the request was rejected: check the block's aspect_ratio and the input images"
            return RejectedRequestError(f"{PROVIDER} {label}: {fix}. Gemini said: {message}")
        return GenerationError(f"{PROVIDER} {label}: {fix}. Gemini said: {message}")
