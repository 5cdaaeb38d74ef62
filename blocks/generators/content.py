"""What `content_source` and `color_mode` mean, once, for every generator.

Deterministic on purpose: the same request gives the same headline and palette, so the offline
renderer is reproducible and a provider prompt is stable across retries.
"""

from __future__ import annotations

import colorsys
import hashlib

from blocks.generators.base import AdRequest

FALLBACK_PALETTE = ("#1f2937", "#f59e0b", "#ffffff")


def pick_headline(request: AdRequest) -> str:
    """The headline for this variation, from the job's content source.

    `hooks` cycles through the product's hooks, `benefits` through its key benefits (as
    "<product>: <benefit>"), `recreate_template` keeps the template's copy and names the product.
    Each falls back to the product name when its source is empty.
    """
    product = request.product
    source = request.parameters.content_source
    index = request.variation_index
    if source == "hooks" and product.hooks:
        return product.hooks[index % len(product.hooks)]
    if source == "benefits" and product.key_benefits:
        return f"{product.name}: {product.key_benefits[index % len(product.key_benefits)]}"
    if source == "recreate_template" and request.template_copy:
        return f"{request.template_copy} — {product.name}"
    return product.name


def _hex_to_rgb(value: str) -> tuple[int, int, int]:
    value = value.lstrip("#")
    return (int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16))


def _rgb_to_hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def complement(color: str) -> str:
    """The complementary colour (hue rotated by 180°) of a hex colour."""
    r, g, b = (c / 255 for c in _hex_to_rgb(color))
    h, lightness, s = colorsys.rgb_to_hls(r, g, b)
    r2, g2, b2 = colorsys.hls_to_rgb((h + 0.5) % 1.0, lightness, s)
    return _rgb_to_hex((round(r2 * 255), round(g2 * 255), round(b2 * 255)))


def pick_palette(request: AdRequest, template_colors: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Colours for this variation (background, accent, text), from the job's colour mode.

    `original` keeps the template's own colours, `brand` uses the brand colours, `complementary`
    their complements. Variations rotate the palette so they differ visibly.
    """
    mode = request.parameters.color_mode
    brand = request.product.brand_colors or FALLBACK_PALETTE
    if mode == "brand":
        palette = tuple(brand)
    elif mode == "complementary":
        palette = tuple(complement(c) for c in brand)
    else:
        palette = template_colors or FALLBACK_PALETTE
    palette = (palette + FALLBACK_PALETTE)[: max(3, len(palette))]
    shift = request.variation_index % len(palette)
    return palette[shift:] + palette[:shift]


def stable_seed(*parts: str | int) -> int:
    """A seed derived from the request's identity (same inputs → same seed)."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")
