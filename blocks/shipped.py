"""Every block class ad-scheduler ships, imported eagerly.

Register them all with `prefect block register -m blocks.shipped`.

`blocks.registry` maps each slug to its class lazily; a test keeps the two in step.
"""

from blocks.email_resend import ResendEmail
from blocks.generators.gemini import GeminiImageGenerator
from blocks.generators.http_service import HttpAdGenerator
from blocks.generators.local import LocalAdRenderer
from blocks.slack_webhook import SlackIncomingWebhook
from blocks.storage import AdStorage

__all__ = [
    "AdStorage",
    "GeminiImageGenerator",
    "HttpAdGenerator",
    "LocalAdRenderer",
    "ResendEmail",
    "SlackIncomingWebhook",
]
