"""Sample brand, product and templates for the demo and tests, drawn by code (no downloads)."""

from __future__ import annotations

import io
import uuid

import sqlalchemy as sa
from PIL import Image, ImageDraw

from blocks.storage import AdStorage
from db.models import Brand, Product
from db.session import session_scope
from flows.templates import SyncReport, sync_template_catalog

SAMPLE_BRAND = "Northwind Outdoors"
SAMPLE_PRODUCT = "Trail Runner 2"
TEMPLATE_STYLES = (
    ("#0f766e", "#f97316"),
    ("#1e3a8a", "#facc15"),
    ("#7c2d12", "#fde68a"),
    ("#111827", "#22d3ee"),
    ("#831843", "#f9a8d4"),
    ("#14532d", "#bef264"),
    ("#312e81", "#c4b5fd"),
    ("#78350f", "#fcd34d"),
    ("#0c4a6e", "#7dd3fc"),
    ("#3f3f46", "#fb7185"),
    ("#064e3b", "#6ee7b7"),
    ("#4c1d95", "#fbbf24"),
)


def template_png(index: int, size: int = 540) -> bytes:
    """A sample template: a two-colour layout that differs per index."""
    base, accent = TEMPLATE_STYLES[index % len(TEMPLATE_STYLES)]
    image = Image.new("RGB", (size, size), base)
    draw = ImageDraw.Draw(image)
    step = size // 6
    for i in range(index % 4 + 2):
        inset = i * step // 2
        draw.ellipse((inset, inset, size - inset, size - inset), outline=accent, width=6)
    draw.rectangle((0, size - step, size, size), fill=accent)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def product_png(size: int = 400) -> bytes:
    """A sample product photo (a stylised shoe) with a transparent background."""
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((40, 200, 360, 300), radius=40, fill="#f97316")
    draw.polygon([(60, 210), (180, 110), (260, 120), (300, 210)], fill="#0f766e")
    draw.rectangle((40, 290, 360, 320), fill="#1f2937")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


async def seed_sample_data(
    tenant_id: uuid.UUID, storage: AdStorage, templates: int = 8
) -> tuple[Brand, Product, SyncReport]:
    """Write sample templates and a product image to storage; create the brand and product.

    Idempotent: re-running finds the same brand and product and adds nothing twice.
    """
    for index in range(templates):
        path = storage.template_path(f"sample-{index + 1:02d}.png")
        await storage.write(path, template_png(index))
    product_image = "products/trail-runner-2.png"
    await storage.write(product_image, product_png())
    async with session_scope() as session:
        brand = await session.scalar(
            sa.select(Brand).where(Brand.tenant_id == tenant_id, Brand.name == SAMPLE_BRAND)
        )
        if brand is None:
            brand = Brand(
                tenant_id=tenant_id, name=SAMPLE_BRAND, colors=["#0f766e", "#f97316", "#fefce8"]
            )
            session.add(brand)
            await session.flush()
        product = await session.scalar(
            sa.select(Product).where(Product.tenant_id == tenant_id, Product.name == SAMPLE_PRODUCT)
        )
        if product is None:
            product = Product(
                tenant_id=tenant_id,
                brand_id=brand.id,
                name=SAMPLE_PRODUCT,
                description="A light trail-running shoe with a grippy sole.",
                key_benefits=["Grips wet rock", "Weighs 240 g", "Recycled upper"],
                brand_colors=list(brand.colors),
                image_paths=[product_image],
                hooks=["Run further, weigh less", "Own every trail", "Your new favourite climb"],
            )
            session.add(product)
    report = await sync_template_catalog(tenant_id, storage)
    return brand, product, report
