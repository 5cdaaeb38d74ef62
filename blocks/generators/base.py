"""The generator interface every ad generator block implements.

A generator turns one `AdRequest` (one variation of one template for one product) into one
`AdImage`. Flows never call a provider directly: they load the job's generator block, hold a slot
of the block's provider limit (a Prefect global concurrency limit shared by every worker), then call
`generate`. Failures are `GenerationError`s that say whether a retry can help.
"""

from __future__ import annotations

import abc
from typing import ClassVar

from prefect.blocks.core import Block
from pydantic import BaseModel, ConfigDict, Field

from domain.params import AdParameters


class ProductBrief(BaseModel):
    """What a generator needs to know about the product (no database handles)."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str = ""
    brand_name: str = ""
    key_benefits: tuple[str, ...] = ()
    brand_colors: tuple[str, ...] = ()
    hooks: tuple[str, ...] = ()


class AdRequest(BaseModel):
    """One variation to generate.

    Attributes:
        product: The product brief.
        template_name: The template's storage name.
        template_image: The template image bytes.
        template_copy: The template's own copy (for `recreate_template`), when known.
        product_image: The product image bytes chosen by the image mode, if any.
        variation_index: 0-based index of this variation within the ad run.
        parameters: The job's ad parameters.
        width: Output width in pixels.
        height: Output height in pixels.
    """

    model_config = ConfigDict(frozen=True)

    product: ProductBrief
    template_name: str
    template_image: bytes = Field(repr=False)
    template_copy: str = ""
    product_image: bytes | None = Field(default=None, repr=False)
    variation_index: int = Field(ge=0)
    parameters: AdParameters
    width: int = Field(default=1080, gt=0)
    height: int = Field(default=1080, gt=0)


class AdImage(BaseModel):
    """One generated ad."""

    data: bytes = Field(repr=False)
    content_type: str = "image/png"
    width: int
    height: int
    headline: str = ""

    @property
    def extension(self) -> str:
        """File extension for the content type."""
        return {"image/jpeg": "jpg", "image/webp": "webp"}.get(self.content_type, "png")


class GenerationError(Exception):
    """A generation failed.

    Attributes:
        retryable: True when trying again later can succeed (429, 5xx, timeouts).
        retry_after: Seconds the provider asked us to wait, when it said.
    """

    def __init__(
        self, message: str, *, retryable: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class RejectedRequestError(GenerationError):
    """The provider permanently refused this request's content (a 4xx other than credentials,
    a missing model/URL or a rate limit): the same template fails the same way every time, so a
    run sets the template aside instead of retrying it (`flows/pipeline.py`).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class AdGenerator(Block, abc.ABC):
    """Base class of generator blocks.

    Attributes:
        provider_limit: Name of the Prefect global concurrency limit every run on every worker
            draws from before calling this provider.
        max_in_flight: Requests in flight at once, across all workers (the limit's size).
        requests_per_minute: Request rate across all workers (the limit's `:rate` companion, a
            sliding window: `flows/limits.py`), or None.
    """

    _block_schema_capabilities: ClassVar[list[str]] = ["generate-ads"]

    provider_limit: str = Field(
        default="ad-provider-local",
        description="Name of the global concurrency limit shared by every worker.",
    )
    max_in_flight: int = Field(
        default=8, ge=1, description="Requests in flight at once across all workers."
    )
    requests_per_minute: int | None = Field(
        default=None, ge=1, description="Request rate across all workers, or none."
    )

    @abc.abstractmethod
    async def generate(self, request: AdRequest) -> AdImage:
        """Generate one ad for `request`.

        Raises:
            GenerationError: The provider could not produce an image.
        """
