"""Ad parameters and export settings: the `scheduled_jobs.parameters` document.

Shared by the SDK (validation before anything is written), the flows (reading a job) and the
export step. Nothing secret lives here: Slack webhooks and API keys are referenced by block name.
The job spec's export part (`domain.spec.ExportSpec`) is these settings plus a Slack webhook
URL; both are built on `ExportFields`, so there is one set of export validators.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator, model_validator

from domain.approval import ApprovalSettings
from domain.vocab import (
    DEFAULT_TEMPLATE_CONCURRENCY,
    EMAIL_DESTINATIONS,
    MAX_TEMPLATE_CONCURRENCY,
    SLACK_DESTINATIONS,
    ColorMode,
    ContentSource,
    Destination,
    EmailMode,
    ImageMode,
)

MAX_VARIATIONS = 10
MAX_RECIPIENTS = 50
#: A saved block's name, optionally prefixed by its block-type slug ("gemini-image/prod").
BLOCK_NAME_PATTERN = r"^([a-z0-9][a-z0-9-]{0,62}/)?[a-z0-9][a-z0-9-]{0,62}$"


class AdParameters(BaseModel):
    """How each ad run is made.

    Attributes:
        variations: Ads per template (1–10).
        content_source: Where headlines come from: `hooks` (the product's own hook list),
            `benefits` (its key benefits), `recreate_template` (the template's own copy,
            restyled for the product).
        color_mode: `original` keeps the template's palette, `brand` uses the product's brand
            colours, `complementary` uses the complements of the brand colours.
        image_mode: `auto` picks the product image per variation; `specific` always uses
            `product_image`.
        product_image: Storage path of the product image for `specific` image mode.
        generator_block: Name of a saved generator block; empty means the offline renderer.
    """

    model_config = ConfigDict(extra="forbid")

    variations: int = Field(default=3, ge=1, le=MAX_VARIATIONS, description="Ads per template.")
    content_source: ContentSource = "hooks"
    color_mode: ColorMode = "original"
    image_mode: ImageMode = "auto"
    product_image: str | None = None
    generator_block: str | None = Field(default=None, pattern=BLOCK_NAME_PATTERN)

    @model_validator(mode="after")
    def _specific_needs_image(self) -> AdParameters:
        if self.image_mode == "specific" and not self.product_image:
            raise ValueError("image_mode 'specific' needs product_image (a storage path)")
        return self


class ExportFields(BaseModel):
    """The fields and rules every export description shares (settings and spec).

    Attributes:
        destination: `none`, `email`, `slack` or `both`.
        email_recipients: Up to 50 addresses (required for email); stored lower-cased, each once.
        email_block: Name of the saved Resend email block (required for email).
        email_mode: `per_ad_run` (one email per template, as the seed did) or `digest`.
        slack_webhook_block: Name of a saved Slack webhook block (never the URL itself).
    """

    model_config = ConfigDict(extra="forbid")

    #: What a Slack export needs, for the error when it is missing (subclasses add the URL).
    SLACK_TARGET_ALLOWED: ClassVar[str] = "slack_webhook_block (a Slack webhook block name)"

    destination: Destination = "none"
    email_recipients: list[EmailStr] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    email_block: str | None = Field(default=None, pattern=BLOCK_NAME_PATTERN)
    email_mode: EmailMode = "per_ad_run"
    slack_webhook_block: str | None = Field(default=None, pattern=BLOCK_NAME_PATTERN)

    @field_validator("email_recipients", mode="before")
    @classmethod
    def _recipient_limit(cls, value: Any) -> Any:
        # Before pydantic's own length check, so the message says what is allowed.
        if isinstance(value, list | tuple) and len(value) > MAX_RECIPIENTS:
            raise ValueError(f"{len(value)} recipients; allowed: at most {MAX_RECIPIENTS}")
        return value

    @field_validator("email_recipients")
    @classmethod
    def _unique_recipients(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(v.lower() for v in value))

    @property
    def wants_email(self) -> bool:
        """True when ads go out by email."""
        return self.destination in EMAIL_DESTINATIONS

    @property
    def wants_slack(self) -> bool:
        """True when ads go to Slack."""
        return self.destination in SLACK_DESTINATIONS

    def has_slack_target(self) -> bool:
        """True when a Slack export knows where to post."""
        return bool(self.slack_webhook_block)

    @model_validator(mode="after")
    def _channels_configured(self) -> Any:
        if self.wants_email and not self.email_recipients:
            raise ValueError("email export needs at least one address in email_recipients")
        if self.wants_email and not self.email_block:
            raise ValueError("email export needs email_block (the name of a Resend email block)")
        if self.wants_slack and not self.has_slack_target():
            raise ValueError(f"slack export needs {self.SLACK_TARGET_ALLOWED}")
        return self


class ExportSettings(ExportFields):
    """Where finished ads go, as stored in `scheduled_jobs.parameters` (no secrets)."""


class JobParameters(BaseModel):
    """The whole `scheduled_jobs.parameters` document."""

    model_config = ConfigDict(extra="forbid")

    ad: AdParameters = Field(default_factory=AdParameters)
    export: ExportSettings = Field(default_factory=ExportSettings)
    template_concurrency: int = Field(
        default=DEFAULT_TEMPLATE_CONCURRENCY,
        ge=1,
        le=MAX_TEMPLATE_CONCURRENCY,
        description="Templates generated at once within one run.",
    )
    approval: ApprovalSettings = Field(default_factory=ApprovalSettings)  # approval hook

    def held_export(self) -> ExportSettings:
        """The export a run may do as soon as its ads are made: none while the job asks for
        approval (the approved ads are exported after the decision, `flows/approval.py`)."""
        return ExportSettings() if self.approval.enabled else self.export
