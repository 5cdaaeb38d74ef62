"""Email through Resend (https://resend.com/docs/api-reference/emails/send-email).

The `resend` SDK keeps its configuration in module globals (`resend.api_key`, `resend.api_url`),
which two concurrent sends with different blocks would race on, and which would leave the key
readable by any code in the process. So the key never goes there: the client installs, once, an
SDK transport (`resend.AsyncHTTPClient`, the SDK's documented extension point) that takes the key,
base URL and timeout from a context variable set for the duration of one `send`. The SDK still
builds the request, the `Idempotency-Key` header and the typed errors; the transport only decides
where the request goes and with which key.

Errors are classified by HTTP status and Resend's error `name`, not by exception class (the SDK
raises a plain `ResendError` for several cases, see INTEGRATIONS.md §1.5): 429
`rate_limit_exceeded`, 5xx, connection failures and `concurrent_idempotent_requests` can be
retried; everything else (daily/monthly quota included) is permanent.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import resend
from prefect.blocks.core import Block
from pydantic import ConfigDict, Field, HttpUrl, SecretStr, field_validator
from resend.exceptions import ResendError

from blocks.errors import DeliveryError, ErrorKind
from domain.redact import redact
from domain.retry import retry_after_from_headers

#: Resend's limit on one email, attachments included, after base64 encoding.
RESEND_MAX_MESSAGE_BYTES = 40 * 1024 * 1024
#: Resend's limit on `to` addresses.
RESEND_MAX_RECIPIENTS = 50
DEFAULT_BASE_URL = "https://api.resend.com"


class EmailDeliveryError(DeliveryError):
    """A send that Resend (or the network) refused; never carries the API key."""


@dataclass(frozen=True)
class SentEmail:
    """What Resend answered to an accepted email.

    Attributes:
        id: Resend's email id.
        headers: The response headers (lower-cased), e.g. `ratelimit-remaining`.
    """

    id: str
    headers: dict[str, str]


@dataclass(frozen=True)
class _Target:
    api_key: str
    base_url: str
    timeout: float


_TARGET: ContextVar[_Target | None] = ContextVar("ad_scheduler_resend_target", default=None)


class _ScopedTransport(resend.AsyncHTTPClient):
    """SDK transport that sends to the base URL and with the key of the current `send` call."""

    def __init__(self, fallback: resend.AsyncHTTPClient | None) -> None:
        self._fallback = fallback

    async def request(  # noqa: PLR0917  # the SDK's signature
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        json: dict[str, object] | list[object] | None = None,
        files: dict[str, Any] | None = None,
        data: dict[str, str] | None = None,
    ) -> tuple[bytes, int, Mapping[str, str]]:
        target = _TARGET.get()
        if target is None:  # someone else's use of the SDK: behave as the SDK would
            if self._fallback is None:
                raise RuntimeError("no Resend transport configured")
            return await self._fallback.request(method, url, headers, json, files, data)
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        sdk_base_path = urlsplit(resend.api_url).path.rstrip("/")
        if sdk_base_path and path.startswith(sdk_base_path):
            path = path[len(sdk_base_path) :]
        send_headers = dict(headers)
        send_headers["Authorization"] = f"Bearer {target.api_key}"
        try:
            async with httpx.AsyncClient(timeout=target.timeout) as client:
                response = await client.request(
                    method,
                    f"{target.base_url}{path}",
                    headers=send_headers,
                    json=json if data is None and files is None else None,
                    data=data,
                    files=files,
                )
        except httpx.HTTPError as exc:
            # The SDK turns any exception into ResendError("HttpClientError"); name the failure
            # class only (never the request, whose headers hold the key).
            raise RuntimeError(f"{type(exc).__name__}: connection to Resend failed") from None
        return response.content, response.status_code, response.headers


def _install_transport() -> None:
    current = resend.default_async_http_client
    if not isinstance(current, _ScopedTransport):
        resend.default_async_http_client = _ScopedTransport(current)


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    return retry_after_from_headers(dict(headers)) if headers else None


def classify_resend_error(error: ResendError) -> ErrorKind:
    """Whether a Resend error can be retried (see the module docstring)."""
    code = int(error.code) if str(error.code).isdigit() else 500
    error_type = str(error.error_type or "")
    if error_type == "HttpClientError":
        return "retryable"
    if code == 429:
        return "retryable" if error_type == "rate_limit_exceeded" else "permanent"
    if code == 409 and error_type == "concurrent_idempotent_requests":
        return "retryable"
    if code >= 500:
        return "retryable"
    return "permanent"


class ResendClient:
    """Sends one email at a time through the real `resend` SDK (async path).

    Built by `ResendEmail.get_client()`; holds the key only in memory and never logs it.
    """

    def __init__(self, *, api_key: str, base_url: str, timeout: float) -> None:
        self._target = _Target(api_key=api_key, base_url=base_url.rstrip("/"), timeout=timeout)

    async def send(self, params: dict[str, Any], *, idempotency_key: str) -> SentEmail:
        """Send one email.

        Args:
            params: The `POST /emails` body (`from`, `to`, `subject`, `html`, …).
            idempotency_key: Sent as `Idempotency-Key`; the same key and body within 24 h is
                answered with the original email and not sent again.

        Returns:
            Resend's id for the email and the response headers.

        Raises:
            EmailDeliveryError: Resend refused the email or could not be reached.
        """
        _install_transport()
        token = _TARGET.set(self._target)
        try:
            response = await resend.Emails.send_async(
                params,  # type: ignore[arg-type]  # a plain dict with the SendParams keys
                {"idempotency_key": idempotency_key},
            )
        except ResendError as exc:
            code = int(exc.code) if str(exc.code).isdigit() else 500
            error_type = str(exc.error_type or "unknown")
            detail = redact(str(exc.message or ""), [self._target.api_key], limit=500)
            raise EmailDeliveryError(
                f"Resend answered {code} {error_type}: {detail}",
                kind=classify_resend_error(exc),
                status=code,
                error_type=error_type,
                retry_after=_retry_after(exc.headers),
            ) from None
        finally:
            _TARGET.reset(token)
        headers = {
            str(k).lower(): str(v) for k, v in dict(response.get("http_headers") or {}).items()
        }
        return SentEmail(id=str(response["id"]), headers=headers)


class ResendEmail(Block):
    """A Resend account and sender used to email generated ads.

    Attributes:
        api_key: The Resend API key.
        from_address: The sender, on a domain verified in Resend ("Ads <ads@example.com>").
        reply_to: Where replies go, if not to the sender.
        base_url: The Resend API base URL (a proxy or a local fake in tests).
        timeout: Seconds to wait for one request.
        requests_per_second: The account's API rate limit, shared by every worker.
        max_message_bytes: Largest email sent, attachments included after base64.

    Example:
        ```python
        from blocks.email_resend import ResendEmail
        email = ResendEmail.load("BLOCK_NAME")
        client = email.get_client()
        ```
    """

    _block_type_name = "Resend Email"
    _block_type_slug = "ad-scheduler-resend-email"
    _description = "Sends the generated ads by email through Resend."
    _documentation_url = HttpUrl("https://resend.com/docs/api-reference/emails/send-email")

    # Validation errors must not echo what was typed into a secret field.
    model_config = ConfigDict(hide_input_in_errors=True)

    api_key: SecretStr = Field(description="The Resend API key.")
    from_address: str = Field(
        description="Sender on a domain verified in Resend, e.g. 'Ads <ads@example.com>'."
    )
    reply_to: str | None = Field(default=None, description="Reply-to address, if any.")
    base_url: str = Field(
        default=DEFAULT_BASE_URL, description="Resend API base URL (a proxy or a local fake)."
    )
    timeout: float = Field(default=30.0, gt=0, description="Seconds to wait for one request.")
    requests_per_second: float = Field(
        default=2.0,
        gt=0,
        description="Resend API rate limit, shared by every worker.",
    )
    max_message_bytes: int = Field(
        default=RESEND_MAX_MESSAGE_BYTES,
        gt=0,
        le=RESEND_MAX_MESSAGE_BYTES,
        description="Largest email sent, attachments included after base64 encoding.",
    )

    @field_validator("base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value.rstrip("/")

    def get_client(self) -> ResendClient:
        """A client that sends with this block's key, base URL and timeout."""
        return ResendClient(
            api_key=self.api_key.get_secret_value(), base_url=self.base_url, timeout=self.timeout
        )
