"""Manage the catalog from the Prefect UI: brands, products and templates as Run forms.

Four flows, each deployed from `prefect.yaml` with the tag `catalog-form` (`save-brand`,
`save-product`, `deactivate-catalog-item`, `list-catalog`). A marketer opens one in the Prefect
UI, presses Run → Custom run and fills in the form Prefect renders from the parameter model.
Every run goes through `CatalogManager` (the SDK's catalog, the same calls as `ad-scheduler
brands|products|templates …`), so every rule holds: a bad field fails the run with the SDK's own
message naming the field (`brand_colors.0: not a colour; allowed: #rrggbb …`) and nothing is
written. Why these live in `scheduler/`: see `scheduler/forms.py` (the forms are SDK clients).

Templates are image files: they are added with `ad-scheduler templates add` (or synced from
template storage), not typed into a form; here they are listed and deactivated.
The tenant is the one the CLI acts for (`AD_SCHEDULER_TENANT_ID`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from prefect import flow
from prefect.artifacts import acreate_markdown_artifact
from prefect.states import State
from pydantic import BaseModel, ConfigDict, Field

from db.errors import NotFoundError
from db.read_models import BrandView, ProductView, TemplateView
from domain import text as medium
from domain.catalog import MAX_DESCRIPTION_LENGTH, MAX_NAME_LENGTH
from domain.errors import AdSchedulerError
from scheduler.catalog import CatalogManager
from scheduler.forms import _done, _refused, form_tenant

#: What `deactivate-catalog-item` can take out of use.
CatalogKind = Literal["brand", "product", "template"]
#: The artifact `list-catalog` publishes (one key per tenant, so the UI keeps its history).
CATALOG_ARTIFACT_PREFIX = "catalog"


class BrandForm(BaseModel):
    """A brand: the form of `save-brand` (the same fields as `ad-scheduler brands create`)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1,
        max_length=MAX_NAME_LENGTH,
        description="The brand's name (unique in the tenant). Saving a name that exists "
        "updates that brand.",
    )
    colors: list[str] = Field(
        default_factory=list,
        title="Brand colours",
        description="Hex colours like #0f766e (at most 12); the colour mode `brand` uses them.",
    )


class ProductForm(BaseModel):
    """A product: the form of `save-product` (the same fields as `ad-scheduler products create`).

    The form is the whole product: saving replaces every field of an existing product of the
    same name in the same brand (its active state is kept).
    """

    model_config = ConfigDict(extra="forbid")

    brand: str = Field(min_length=1, description="The brand's name (or id) the product belongs to.")
    name: str = Field(
        min_length=1,
        max_length=MAX_NAME_LENGTH,
        description="The product's name (unique within its brand). Saving a name that exists "
        "in the brand updates that product.",
    )
    description: str = Field(
        default="",
        max_length=MAX_DESCRIPTION_LENGTH,
        description="What the product is (at most 2000 characters).",
    )
    key_benefits: list[str] = Field(
        default_factory=list,
        description="Short lines (at most 200 characters, 50 lines); the content source "
        "`benefits` draws headlines from them.",
    )
    brand_colors: list[str] = Field(
        default_factory=list,
        title="Brand colours",
        description="Hex colours like #0f766e for this product's ads; empty: the brand's colours.",
    )
    image_paths: list[str] = Field(
        default_factory=list,
        title="Product images",
        description="Storage paths of product photos (as `ad-scheduler products create "
        "--image` takes them); the image mode picks one.",
    )
    hooks: list[str] = Field(
        default_factory=list,
        description="Ready-made headlines; the content source `hooks` draws from them.",
    )


def _brand_text(brand: BrandView) -> str:
    colours = ", ".join(brand.colors) or "no colours"
    return f"brand {brand.name!r} ({brand.id}, {colours}) is {_state(brand.active)}"


def _state(active: bool) -> str:
    return "active" if active else "deactivated"


@flow(name="save-brand", log_prints=False)
async def save_brand(brand: BrandForm) -> State:
    """Create a brand, or update the colours of the brand of the same name.

    Fails, naming the field and what is allowed, on any input the SDK refuses; then nothing is
    written. An update keeps the brand's active state.

    Args:
        brand: The brand: name and colours.
    """
    catalog = CatalogManager(form_tenant())
    try:
        try:
            existing = await catalog.brand(brand.name)
        except NotFoundError:
            saved = await catalog.create_brand(brand.name, colors=brand.colors)
            verb = "created"
        else:
            saved = await catalog.update_brand(existing.id, colors=brand.colors)
            verb = "updated"
    except AdSchedulerError as exc:
        return _refused(exc)
    return _done(f"{verb} {_brand_text(saved)}", data=str(saved.id))


async def _product_in_brand(catalog: CatalogManager, brand: str, name: str) -> ProductView | None:
    # By name within the brand: the same product name may exist under another brand.
    products = await catalog.list_products(brand=brand, include_inactive=True)
    return next((p for p in products if p.name == name.strip()), None)


@flow(name="save-product", log_prints=False)
async def save_product(product: ProductForm) -> State:
    """Create a product in a brand, or update the brand's product of the same name.

    Fails, naming the field and what is allowed, on any input the SDK refuses (a bad colour,
    a deactivated or unknown brand, …); then nothing is written.

    Args:
        product: The product: brand, name, description, key benefits, colours, images, hooks.
    """
    catalog = CatalogManager(form_tenant())
    fields: dict[str, Any] = {
        "description": product.description,
        "key_benefits": product.key_benefits,
        "image_paths": product.image_paths,
        "hooks": product.hooks,
    }
    try:
        existing = await _product_in_brand(catalog, product.brand, product.name)
        if existing is None:
            saved = await catalog.create_product(
                product.brand,
                name=product.name,
                brand_colors=product.brand_colors or None,
                **fields,
            )
            verb = "created"
        else:
            colours = product.brand_colors or (await catalog.brand(existing.brand_id)).colors
            saved = await catalog.update_product(existing.id, brand_colors=colours, **fields)
            verb = "updated"
    except AdSchedulerError as exc:
        return _refused(exc)
    return _done(
        f"{verb} product {saved.name!r} ({saved.id}) of brand {saved.brand_name!r}; it is "
        f"{_state(saved.active)}",
        data=str(saved.id),
    )


@flow(name="deactivate-catalog-item", log_prints=False)
async def deactivate_catalog_item(
    kind: Annotated[
        CatalogKind, Field(description="What to deactivate: a brand, a product or a template.")
    ],
    name: Annotated[
        str,
        Field(
            min_length=1,
            description="The brand's or product's name or id; a template's storage name or id.",
        ),
    ],
    brand: Annotated[
        str,
        Field(
            description="Products only: the brand, when several brands have a product of that "
            "name; empty: the name must be unique."
        ),
    ] = "",
    reason: Annotated[
        str, Field(description="Templates only: why (shown in `ad-scheduler templates list`).")
    ] = "",
) -> State:
    """Take a brand, product or template out of use (nothing is deleted).

    A deactivated brand takes no new products, a deactivated product no new jobs (its jobs keep
    running), a deactivated template leaves the rotation until enabled again.

    Args:
        kind: What to deactivate: `brand`, `product` or `template`.
        name: The brand's or product's name or id; a template's storage name or id.
        brand: Products only: the brand, when several brands have a product of that name.
        reason: Templates only: why (shown in `ad-scheduler templates list`).
    """
    catalog = CatalogManager(form_tenant())
    try:
        if kind == "brand":
            done = await catalog.deactivate_brand(name)
            message = f"deactivated brand {done.name!r} ({done.id}): it takes no new products"
        elif kind == "product":
            ref: Any = name
            if brand.strip():
                found = await _product_in_brand(catalog, brand, name)
                if found is None:
                    raise NotFoundError("product", f"{name} (brand {brand})")
                ref = found.id
            product, live = await catalog.deactivate_product(ref)
            message = (
                f"deactivated product {product.name!r} ({product.id}) of brand "
                f"{product.brand_name!r}; {live} live job(s) for it keep running (pause or "
                "delete them to stop them)"
            )
        else:
            template = await catalog.deactivate_template(name, reason=reason.strip() or None)
            message = f"deactivated template {template.storage_name!r} ({template.id})"
    except AdSchedulerError as exc:
        return _refused(exc)
    return _done(message)


def render_catalog_markdown(
    brands: list[BrandView], products: list[ProductView], templates: list[TemplateView]
) -> str:
    """The catalog as markdown tables (brands, products, templates) with their active state."""
    cell = medium.markdown_cell
    lines = ["# Catalog"]
    lines += _markdown_table(
        "Brands",
        ("Brand", "Colours", "State"),
        [(cell(b.name), cell(", ".join(b.colors)) or "—", _state(b.active)) for b in brands],
    )
    lines += _markdown_table(
        "Products",
        ("Product", "Brand", "Key benefits", "Images", "State"),
        [
            (
                cell(p.name),
                cell(p.brand_name),
                len(p.key_benefits),
                len(p.image_paths),
                _state(p.active),
            )
            for p in products
        ],
    )
    lines += _markdown_table(
        "Templates",
        ("Template", "Name", "State"),
        [
            (
                medium.markdown_code_cell(t.storage_name),
                cell(t.name) or "—",
                _state(t.active) + (f" — {cell(t.inactive_reason)}" if t.inactive_reason else ""),
            )
            for t in templates
        ],
    )
    return "\n".join(lines) + "\n"


def _markdown_table(title: str, headers: Sequence[str], rows: list[Sequence[object]]) -> list[str]:
    """A `## title (count)` section holding a markdown table (cells already escaped)."""

    def row(cells: Sequence[object]) -> str:
        return "| " + " | ".join(str(c) for c in cells) + " |"

    return ["", f"## {title} ({len(rows)})", "", row(headers), "|" + "---|" * len(headers)] + [
        row(r) for r in rows
    ]


@flow(name="list-catalog", log_prints=False)
async def list_catalog(
    include_inactive: Annotated[
        bool, Field(description="Also list deactivated brands and products.")
    ] = True,
) -> State:
    """Publish the tenant's brands, products and templates, with their active state, as a
    markdown artifact (key `catalog-<tenant id>`).

    Returns (as the run's result) a dict `{"brands": [...], "products": [...], "templates":
    [...]}`, each item `{"id", "name", "active"}` (products also `"brand"`, templates their
    `"storage_name"`).

    Args:
        include_inactive: Also list deactivated brands and products (templates: always all).
    """
    tenant = form_tenant()
    catalog = CatalogManager(tenant)
    try:
        brands = await catalog.list_brands(include_inactive=include_inactive)
        products = await catalog.list_products(include_inactive=include_inactive)
        templates = await catalog.list_templates()
    except AdSchedulerError as exc:
        return _refused(exc)
    await acreate_markdown_artifact(
        markdown=render_catalog_markdown(brands, products, templates),
        key=f"{CATALOG_ARTIFACT_PREFIX}-{tenant}",
        description="Brands, products and templates, with their active state",
    )
    listing = {
        "brands": [{"id": str(b.id), "name": b.name, "active": b.active} for b in brands],
        "products": [
            {"id": str(p.id), "name": p.name, "brand": p.brand_name, "active": p.active}
            for p in products
        ],
        "templates": [
            {"id": str(t.id), "name": t.name, "storage_name": t.storage_name, "active": t.active}
            for t in templates
        ],
    }
    return _done(
        f"{len(brands)} brand(s), {len(products)} product(s), {len(templates)} template(s)",
        data=listing,
    )


CATALOG_FORM_FLOWS = (save_brand, save_product, deactivate_catalog_item, list_catalog)

__all__ = [
    "CATALOG_FORM_FLOWS",
    "BrandForm",
    "CatalogKind",
    "ProductForm",
    "deactivate_catalog_item",
    "list_catalog",
    "render_catalog_markdown",
    "save_brand",
    "save_product",
]
