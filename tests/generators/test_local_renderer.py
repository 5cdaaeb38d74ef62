"""LocalAdRenderer: real PNGs, deterministic, and the colour/content modes change the ad."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from blocks.generators.base import AdRequest, GenerationError, ProductBrief
from blocks.generators.content import complement, pick_headline, pick_palette
from blocks.generators.local import LocalAdRenderer
from domain.params import AdParameters
from flows.sample_data import product_png, template_png

BRIEF = ProductBrief(
    name="Trail Runner 2",
    brand_name="Northwind",
    key_benefits=("Light",),
    brand_colors=("#0f766e", "#f97316"),
    hooks=("Run further", "Own the trail"),
)


def _request(index: int = 0, **params) -> AdRequest:
    return AdRequest(
        product=BRIEF,
        template_name="t.png",
        template_image=template_png(1),
        product_image=product_png(),
        variation_index=index,
        parameters=AdParameters(**params),
        width=540,
        height=540,
    )


async def test_renders_a_real_png_deterministically() -> None:
    renderer = LocalAdRenderer()
    first = await renderer.generate(_request())
    second = await renderer.generate(_request())
    assert first.data == second.data
    with Image.open(io.BytesIO(first.data)) as image:
        assert (image.format, image.size) == ("PNG", (540, 540))
    assert first.headline == "Run further"


async def test_modes_change_the_output() -> None:
    renderer = LocalAdRenderer()
    outputs = {
        mode: (await renderer.generate(_request(color_mode=mode))).data
        for mode in ("original", "brand", "complementary")
    }
    assert len(set(outputs.values())) == 3
    assert (await renderer.generate(_request(index=1))).headline == "Own the trail"


def test_content_and_palette_rules() -> None:
    assert pick_headline(_request(content_source="benefits")) == "Trail Runner 2: Light"
    assert pick_headline(_request(index=3, content_source="hooks")) == "Own the trail"
    assert pick_palette(_request(color_mode="brand"))[:2] == ("#0f766e", "#f97316")
    assert pick_palette(_request(color_mode="complementary"))[0] == complement("#0f766e")
    assert complement("#ff0000") == "#00ffff"


async def test_unreadable_template_is_a_generation_error() -> None:
    bad = _request().model_copy(update={"template_image": b"not an image"})
    with pytest.raises(GenerationError, match="not a readable image"):
        await LocalAdRenderer().generate(bad)
