"""Ad parameters and export settings: the pydantic models stored in `scheduled_jobs.parameters`.

Shared by the SDK (validation before anything is written), the flows (reading a job) and the
export step. Nothing secret lives here: Slack webhooks and API keys are referenced by block name.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator, model_validator

from domain.approval import ApprovalSettings

ContentSource = Literal["hooks", "benefits", "recreate_template"]
ColorMode = Literal["original", "brand", "complementary"]
ImageMode = Literal["auto", "specific"]
Destination = Literal["none", "email", "slack", "both"]

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


class ExportSettings(BaseModel):
    """Where finished ads go.

    Attributes:
        destination: `none`, `email`, `slack` or `both`.
        email_recipients: Up to 50 addresses (required for email).
        email_block: Name of the saved Resend email block.
        email_mode: `per_ad_run` (one email per template, as the seed did) or `digest`.
        slack_webhook_block: Name of the saved Slack webhook block (never the URL itself).
    """

    model_config = ConfigDict(extra="forbid")

    destination: Destination = "none"
    email_recipients: list[EmailStr] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    email_block: str | None = Field(default=None, pattern=BLOCK_NAME_PATTERN)
    email_mode: Literal["per_ad_run", "digest"] = "per_ad_run"
    slack_webhook_block: str | None = Field(default=None, pattern=BLOCK_NAME_PATTERN)

    @field_validator("email_recipients")
    @classmethod
    def _unique_recipients(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(v.lower() for v in value))

    @property
    def wants_email(self) -> bool:
        """True when ads go out by email."""
        return self.destination in ("email", "both")

    @property
    def wants_slack(self) -> bool:
        """True when ads go to Slack."""
        return self.destination in ("slack", "both")

    @model_validator(mode="after")
    def _channels_configured(self) -> ExportSettings:
        if self.wants_email and not self.email_recipients:
            raise ValueError("email export needs at least one address in email_recipients")
        if self.wants_email and not self.email_block:
            raise ValueError("email export needs email_block (the name of a Resend email block)")
        if self.wants_slack and not self.slack_webhook_block:
            raise ValueError("slack export needs slack_webhook_block (a Slack webhook block name)")
        return self


class JobParameters(BaseModel):
    """The whole `scheduled_jobs.parameters` document."""

    model_config = ConfigDict(extra="forbid")

    ad: AdParameters = Field(default_factory=AdParameters)
    export: ExportSettings = Field(default_factory=ExportSettings)
    template_concurrency: int = Field(
        default=4, ge=1, le=32, description="Templates generated at once within one run."
    )
    approval: ApprovalSettings = Field(default_factory=ApprovalSettings)  # approval hook
