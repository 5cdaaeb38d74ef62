"""Fixtures for the generator tests: fake providers on 127.0.0.1 and ad requests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from blocks.generators.base import AdRequest, ProductBrief
from domain.params import AdParameters
from tests.support.http_fake import (
    FakeServer,
    gemini_default,
    png_bytes,
    running,
    service_default,
)

PRODUCT = ProductBrief(
    name="Trail Runner 2",
    description="A light trail shoe.",
    brand_name="Peak",
    key_benefits=("Grips wet rock", "Weighs 240 g"),
    brand_colors=("#0f766e", "#f97316", "#fefce8"),
    hooks=("Run further", "Own the trail", "Light on your feet"),
)
TEMPLATE_PNG = png_bytes(48, 48, "#123456")
PRODUCT_PNG = png_bytes(20, 20, "#abcdef")


@pytest.fixture
def gemini_fake() -> Iterator[FakeServer]:
    """A fake Gemini generateContent endpoint."""
    with running(FakeServer(gemini_default())) as server:
        yield server


@pytest.fixture
def service_fake() -> Iterator[FakeServer]:
    """A fake team ad service."""
    with running(FakeServer(service_default())) as server:
        yield server


@pytest.fixture
def other_host() -> Iterator[FakeServer]:
    """A second server (another origin) serving image downloads."""
    from tests.support.http_fake import Reply

    with running(FakeServer(lambda seen: Reply(200, png_bytes(16, 16)))) as server:
        yield server


@pytest.fixture
def make_request() -> Callable[..., AdRequest]:
    """Builds an AdRequest; keyword arguments override fields and ad parameters.

    `product_image` is the request's image bytes; `product_image_path` the parameter.
    """

    def build(**overrides: Any) -> AdRequest:
        parameter_fields = {"variations", "content_source", "color_mode", "image_mode"}
        params = {k: overrides.pop(k) for k in list(overrides) if k in parameter_fields}
        if "product_image_path" in overrides:  # AdParameters.product_image (a storage path)
            params["product_image"] = overrides.pop("product_image_path")
        fields: dict[str, Any] = {
            "product": PRODUCT,
            "template_name": "spring/banner-01.png",
            "template_image": TEMPLATE_PNG,
            "template_copy": "Spring sale -30%",
            "product_image": PRODUCT_PNG,
            "variation_index": 0,
            "parameters": AdParameters(**params),
        }
        fields.update(overrides)
        return AdRequest(**fields)

    return build
