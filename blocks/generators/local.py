"""`LocalAdRenderer`: the offline default generator, composing real PNG ads with Pillow.

No network, no model: it lays the template image, the product image and a headline over a
palette chosen by the colour mode. Same request → same bytes (no randomness, no timestamps in
the PNG), so runs are reproducible and tests can compare outputs.
"""

from __future__ import annotations

import asyncio
import io
from typing import ClassVar

from PIL import Image, ImageDraw, ImageFont, ImageOps
from pydantic import Field

from blocks.generators.base import AdGenerator, AdImage, AdRequest, GenerationError
from blocks.generators.content import pick_headline, pick_palette


def _dominant_colors(image: Image.Image, count: int = 3) -> tuple[str, ...]:
    """The template's own main colours (for the `original` colour mode)."""
    small = image.convert("RGB").resize((64, 64))
    quantized = small.quantize(colors=count, method=Image.Quantize.MEDIANCUT)
    palette = quantized.getpalette() or []
    ranked = sorted(quantized.getcolors() or [], reverse=True)
    colors = []
    for _count, index in ranked[:count]:
        offset = int(index) * 3  # type: ignore[call-overload]
        r, g, b = palette[offset : offset + 3]
        colors.append(f"#{r:02x}{g:02x}{b:02x}")
    return tuple(colors)


def _rgb(color: str) -> tuple[int, int, int]:
    color = color.lstrip("#")
    return (int(color[0:2], 16), int(color[2:4], 16), int(color[4:6], 16))


def _readable_on(background: str) -> tuple[int, int, int]:
    r, g, b = _rgb(background)
    return (17, 17, 17) if (0.299 * r + 0.587 * g + 0.114 * b) > 150 else (250, 250, 250)


def render_ad(request: AdRequest) -> AdImage:
    """Compose one ad (blocking; call it off the event loop)."""
    width, height = request.width, request.height
    try:
        template = Image.open(io.BytesIO(request.template_image))
        template.load()
    except Exception as exc:  # Pillow raises several types for bad images
        raise GenerationError(
            f"template {request.template_name!r} is not a readable image: {exc}"
        ) from exc
    palette = pick_palette(request, _dominant_colors(template))
    background, accent = palette[0], palette[1]
    canvas = Image.new("RGB", (width, height), _rgb(background))

    # The template fills the upper two thirds, blended with the palette background.
    band = (width, height * 2 // 3)
    fitted = ImageOps.fit(template.convert("RGB"), band, method=Image.Resampling.LANCZOS)
    tinted = Image.blend(fitted, Image.new("RGB", band, _rgb(background)), 0.25)
    canvas.paste(tinted, (0, 0))
    ImageDraw.Draw(canvas).rectangle((0, band[1] - 8, width, band[1]), fill=_rgb(accent))

    margin = width // 18
    side = min(width, height) * 2 // 5
    if request.product_image:
        try:
            product = Image.open(io.BytesIO(request.product_image)).convert("RGBA")
        except Exception as exc:
            raise GenerationError(f"product image is not a readable image: {exc}") from exc
        product.thumbnail((side, side), Image.Resampling.LANCZOS)
        # A light card with an accent border, so the product reads on any palette.
        card = (width - side - margin - 12, band[1] - side // 2 - 12)
        card_end = (card[0] + side + 24, card[1] + side + 24)
        ImageDraw.Draw(canvas).rounded_rectangle(
            (*card, *card_end),
            radius=side // 10,
            fill=(250, 250, 247),
            outline=_rgb(accent),
            width=max(4, side // 40),
        )
        canvas.paste(
            product,
            (
                card[0] + 12 + (side - product.width) // 2,
                card[1] + 12 + (side - product.height) // 2,
            ),
            product,
        )

    draw = ImageDraw.Draw(canvas)
    headline = pick_headline(request)
    font_size = max(24, width // 16)
    font = ImageFont.load_default(size=font_size)
    small = ImageFont.load_default(size=max(14, width // 36))
    text_color = _readable_on(background)
    # Wrap the headline to the space left of the product card (measured, not guessed).
    text_width = width - 2 * margin - (side + 24 if request.product_image else 0)
    lines: list[str] = []
    for word in headline.split():
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and font.getlength(candidate) <= text_width:
            lines[-1] = candidate
        else:
            lines.append(word)
    y = band[1] + height // 24
    for line in lines[:3]:
        draw.text((margin, y), line, font=font, fill=text_color)
        y += int(font_size * 1.2)
    caption = request.product.brand_name or request.product.name
    draw.text((margin, height - height // 12), caption, font=small, fill=_rgb(accent))

    out = io.BytesIO()
    canvas.save(out, format="PNG", optimize=False)
    return AdImage(
        data=out.getvalue(),
        content_type="image/png",
        width=width,
        height=height,
        headline=headline,
    )


class LocalAdRenderer(AdGenerator):
    """Offline ad renderer (Pillow): the embedded default generator.

    Attributes:
        latency_seconds: Artificial delay per ad, to stand in for a provider in benchmarks.

    Example:
        ```python
        from blocks.generators.local import LocalAdRenderer
        renderer = LocalAdRenderer.load("BLOCK_NAME")
        ```
    """

    _block_type_name = "Local Ad Renderer"
    _block_type_slug = "ad-scheduler-local-renderer"
    _description: ClassVar[str] = "Offline Pillow ad renderer (no network, deterministic)."
    _documentation_url = "https://pillow.readthedocs.io/en/stable/"  # type: ignore[assignment]

    latency_seconds: float = Field(
        default=0.0, ge=0, le=60, description="Artificial delay per ad, for benchmarks."
    )

    async def generate(self, request: AdRequest) -> AdImage:
        """Render one ad; same request, same bytes."""
        if self.latency_seconds:
            await asyncio.sleep(self.latency_seconds)  # a stand-in for provider latency
        return await asyncio.to_thread(render_ad, request)
