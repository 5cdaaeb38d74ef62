"""Slack incoming webhooks (https://docs.slack.dev/messaging/sending-messages-using-incoming-webhooks).

Prefect's own `SlackWebhook` block sends text only (through apprise) and cannot target a test
server; prefect-slack's task swallows errors. This block keeps the webhook URL as a secret and
posts Block Kit JSON itself with httpx.

Slack answers a webhook with a status and a short plain-text body (`ok`, `no_service`,
`channel_not_found`, …). The body decides, not the status (INTEGRATIONS.md §2.2): 429 and 5xx can
be retried (429 carries `Retry-After`); a dead, revoked or misrouted webhook is permanent and
needs a new URL; any other refusal (a malformed payload) is permanent too.

The request goes straight to an httpx transport, not through `httpx.AsyncClient`, because the
client logs every request URL at INFO level, and this URL is the secret.
"""

from __future__ import annotations

from typing import Any

import httpx
from prefect.blocks.core import Block
from pydantic import ConfigDict, Field, HttpUrl, SecretStr, field_validator

from blocks.errors import DeliveryError, ErrorKind
from domain.redact import redact
from domain.retry import retry_after_from_headers

#: Body strings saying the webhook itself is unusable: someone must create or reconnect it.
RECONFIGURE_ERRORS = frozenset(
    {
        "no_service",
        "no_service_id",
        "no_active_hooks",
        "no_team",
        "team_disabled",
        "invalid_token",
        "channel_not_found",
        "channel_is_archived",
        "action_prohibited",
        "posting_to_general_channel_denied",
        "user_not_found",
    }
)


class SlackDeliveryError(DeliveryError):
    """A post that Slack (or the network) refused; never carries the webhook URL."""


def classify_slack_response(status: int, body: str) -> tuple[ErrorKind, str]:
    """Classify a non-`ok` webhook answer; returns the kind and a message for people.

    Args:
        status: The HTTP status.
        body: The response body (a short string such as `channel_not_found`).
    """
    error = body.strip()[:100] or f"http_{status}"
    if status == 429:
        return "retryable", f"Slack rate-limited the webhook ({status} {error})"
    if status >= 500:
        return "retryable", f"Slack failed on its side ({status} {error})"
    if error in RECONFIGURE_ERRORS:
        return (
            "permanent",
            f"Slack refused the webhook ({status} {error}): the webhook must be reconfigured "
            "(create a new incoming webhook and save its URL in the Slack webhook block)",
        )
    return "permanent", f"Slack refused the message ({status} {error})"


class SlackWebhookClient:
    """Posts messages to one incoming webhook. Built by `SlackIncomingWebhook.get_client()`."""

    def __init__(self, *, url: str, timeout: float) -> None:
        self._url = url
        self._timeout = timeout

    async def post(self, payload: dict[str, Any]) -> None:
        """Post one message (`text` plus optional Block Kit `blocks`).

        Raises:
            SlackDeliveryError: Slack refused the message or could not be reached.
        """
        request = httpx.Request(
            "POST",
            self._url,
            json=payload,
            extensions={"timeout": httpx.Timeout(self._timeout).as_dict()},
        )
        try:
            async with httpx.AsyncHTTPTransport(retries=0) as transport:
                response = await transport.handle_async_request(request)
                body_bytes = await response.aread()
        except httpx.TransportError as exc:
            raise SlackDeliveryError(
                redact(f"Slack webhook unreachable ({type(exc).__name__})", [self._url]),
                kind="retryable",
                status=0,
                error_type=type(exc).__name__,
            ) from None
        body = body_bytes.decode("utf-8", errors="replace")
        if response.status_code == 200 and body.strip() == "ok":
            return
        body = redact(body, [self._url])  # before any truncation, which could cut a secret
        kind, message = classify_slack_response(response.status_code, body)
        raise SlackDeliveryError(
            message,
            kind=kind,
            status=response.status_code,
            error_type=body.strip()[:100] or f"http_{response.status_code}",
            retry_after=retry_after_from_headers(dict(response.headers)),
        )


class SlackIncomingWebhook(Block):
    """A Slack incoming webhook that generated ads are posted to.

    Attributes:
        url: The webhook URL (https://hooks.slack.com/services/…); a secret.
        timeout: Seconds to wait for one post.
        messages_per_second: Posting rate, shared by every worker (Slack allows 1/s).

    Example:
        ```python
        from blocks.slack_webhook import SlackIncomingWebhook
        webhook = SlackIncomingWebhook.load("BLOCK_NAME")
        await webhook.get_client().post({"text": "hello"})
        ```
    """

    _block_type_name = "Ad Scheduler Slack Webhook"
    _block_type_slug = "ad-scheduler-slack-webhook"
    _description = "Posts the generated ads to a Slack channel through an incoming webhook."
    _documentation_url = HttpUrl(
        "https://docs.slack.dev/messaging/sending-messages-using-incoming-webhooks"
    )

    # Validation errors must not echo what was typed into a secret field.
    model_config = ConfigDict(hide_input_in_errors=True)

    url: SecretStr = Field(description="The incoming webhook URL; a secret.")
    timeout: float = Field(default=10.0, gt=0, description="Seconds to wait for one post.")
    messages_per_second: float = Field(
        default=1.0, gt=0, description="Posting rate, shared by every worker (Slack allows 1/s)."
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: SecretStr) -> SecretStr:
        # The message must not echo the value.
        if not value.get_secret_value().startswith(("https://", "http://")):
            raise ValueError("url must be an http(s) webhook URL")
        return value

    def get_client(self) -> SlackWebhookClient:
        """A client that posts to this block's webhook."""
        return SlackWebhookClient(url=self.url.get_secret_value(), timeout=self.timeout)
