"""`ad-scheduler brands …`, `products …` and `templates …`: the catalog (database only).

Brands, products and templates are created, listed, updated and deactivated here; nothing is
ever deleted (jobs and run history refer to them). A brand or product is named by id or name,
a template by id or storage name.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from scheduler.commands.common import TenantOption, UsageProblem, console, run, tenant_id

if TYPE_CHECKING:
    from scheduler.catalog import CatalogManager

brands_app = typer.Typer(
    help="Brands (own products and brand-scoped templates).", no_args_is_help=True
)
products_app = typer.Typer(help="Products ads are made for.", no_args_is_help=True)
templates_app = typer.Typer(help="The template catalog.", no_args_is_help=True)

Colors = Annotated[list[str] | None, typer.Option("--color", help="Hex colour #rrggbb (repeat).")]
Benefits = Annotated[list[str] | None, typer.Option("--benefit", help="Key benefit (repeat).")]
Images = Annotated[
    list[str] | None, typer.Option("--image", help="Product image storage path (repeat).")
]
Hooks = Annotated[list[str] | None, typer.Option("--hook", help="Ready-made headline (repeat).")]
Tags = Annotated[list[str] | None, typer.Option("--tag", help="Tag (repeat).")]
All = Annotated[bool, typer.Option("--all", help="Include deactivated ones.")]
BrandRef = Annotated[str, typer.Argument(metavar="BRAND", help="Brand id or name.")]
ProductRef = Annotated[str, typer.Argument(metavar="PRODUCT", help="Product id or name.")]


def _with_catalog(tenant: str | None, call: Any) -> Any:
    """Run `call(catalog)` for the tenant."""
    tenant_uuid = tenant_id(tenant)

    async def go() -> Any:
        from scheduler.catalog import CatalogManager

        catalog: CatalogManager = CatalogManager(tenant_uuid)
        return await call(catalog)

    return run(go)


def _active(flag: bool | None) -> str:
    return "active" if flag else "deactivated"


def _print_updated(kind: str, updated: Any) -> None:
    console.print(f"updated {kind} {updated.name} ({_active(updated.active)})")


# --- brands -----------------------------------------------------------------------------------


@brands_app.command("create")
def brands_create(
    name: Annotated[str, typer.Argument(help="Brand name (unique per tenant).")],
    color: Colors = None,
    tenant: str | None = TenantOption,
) -> None:
    """Create a brand."""
    brand = _with_catalog(tenant, lambda c: c.create_brand(name, colors=color or []))
    console.print(f"created brand {brand.name}  id={brand.id}")


@brands_app.command("list")
def brands_list(include_inactive: All = False, tenant: str | None = TenantOption) -> None:
    """The tenant's brands."""
    brands = _with_catalog(tenant, lambda c: c.list_brands(include_inactive=include_inactive))
    table = Table(title=f"{len(brands)} brand(s)")
    for column in ("Name", "Id", "Colours", "Status"):
        table.add_column(column)
    for brand in brands:
        table.add_row(brand.name, str(brand.id), " ".join(brand.colors), _active(brand.active))
    console.print(table)


@brands_app.command("update")
def brands_update(
    brand: BrandRef,
    name: str | None = typer.Option(None, help="New name."),
    color: Colors = None,
    active: bool | None = typer.Option(None, "--active/--inactive", help="(Re)activate."),
    tenant: str | None = TenantOption,
) -> None:
    """Change a brand (only what is given); --color replaces the colours."""
    if name is None and color is None and active is None:
        raise UsageProblem("nothing to change; allowed: --name, --color, --active/--inactive")
    updated = _with_catalog(
        tenant, lambda c: c.update_brand(brand, name=name, colors=color, active=active)
    )
    _print_updated("brand", updated)


@brands_app.command("deactivate")
def brands_deactivate(
    brand: BrandRef,
    tenant: str | None = TenantOption,
) -> None:
    """No new products under this brand (its products and jobs are unchanged)."""
    updated = _with_catalog(tenant, lambda c: c.deactivate_brand(brand))
    console.print(f"deactivated brand {updated.name}")


# --- products ---------------------------------------------------------------------------------


@products_app.command("create")
def products_create(  # noqa: PLR0917 (one typer option per parameter)
    name: Annotated[str, typer.Argument(help="Product name (unique within its brand).")],
    brand: str = typer.Option(..., help="Brand id or name."),
    description: str = typer.Option("", help="What the product is."),
    benefit: Benefits = None,
    color: Colors = None,
    image: Images = None,
    hook: Hooks = None,
    tenant: str | None = TenantOption,
) -> None:
    """Create a product (its colours default to the brand's)."""
    product = _with_catalog(
        tenant,
        lambda c: c.create_product(
            brand,
            name=name,
            description=description,
            key_benefits=benefit or [],
            brand_colors=color,
            image_paths=image or [],
            hooks=hook or [],
        ),
    )
    console.print(f"created product {product.name} ({product.brand_name})  id={product.id}")
    console.print(
        f"next: ad-scheduler jobs create --name '<job name>' --product {product.id} "
        "--cron '0 9 * * 1'"
    )


@products_app.command("list")
def products_list(
    brand: str | None = typer.Option(None, help="Only this brand (id or name)."),
    include_inactive: All = False,
    tenant: str | None = TenantOption,
) -> None:
    """The tenant's products."""
    products = _with_catalog(
        tenant, lambda c: c.list_products(brand=brand, include_inactive=include_inactive)
    )
    table = Table(title=f"{len(products)} product(s)")
    for column in ("Brand", "Name", "Id", "Benefits", "Images", "Status"):
        table.add_column(column)
    for p in products:
        table.add_row(
            p.brand_name,
            p.name,
            str(p.id),
            "; ".join(p.key_benefits),
            str(len(p.image_paths)),
            _active(p.active),
        )
    console.print(table)


@products_app.command("update")
def products_update(  # noqa: PLR0917 (one typer option per parameter)
    product: ProductRef,
    name: str | None = typer.Option(None, help="New name."),
    description: str | None = typer.Option(None, help="New description."),
    benefit: Benefits = None,
    color: Colors = None,
    image: Images = None,
    hook: Hooks = None,
    active: bool | None = typer.Option(None, "--active/--inactive", help="(Re)activate."),
    tenant: str | None = TenantOption,
) -> None:
    """Change a product (only what is given); a repeated option replaces that whole list."""
    changes = {
        "name": name,
        "description": description,
        "key_benefits": benefit,
        "brand_colors": color,
        "image_paths": image,
        "hooks": hook,
    }
    if all(v is None for v in changes.values()) and active is None:
        raise UsageProblem(
            "nothing to change; allowed: --name, --description, --benefit, --color, --image, "
            "--hook, --active/--inactive"
        )
    updated = _with_catalog(tenant, lambda c: c.update_product(product, active=active, **changes))
    _print_updated("product", updated)


@products_app.command("deactivate")
def products_deactivate(
    product: ProductRef,
    tenant: str | None = TenantOption,
) -> None:
    """No new jobs for this product (its jobs keep running: pause or delete them to stop)."""
    updated, live = _with_catalog(tenant, lambda c: c.deactivate_product(product))
    console.print(
        f"deactivated product {updated.name}"
        + (f"; its {live} live job(s) keep running" if live else "")
    )


# --- templates --------------------------------------------------------------------------------


@templates_app.command("add")
def templates_add(
    file: Annotated[Path, typer.Argument(help="Template image (png, jpg, jpeg, webp).")],
    brand: str | None = typer.Option(None, help="Only for this brand (id or name)."),
    name: str | None = typer.Option(None, help="Display name (default: the file's stem)."),
    tag: Tags = None,
    tenant: str | None = TenantOption,
) -> None:
    """Store an image in template storage and catalog it (storage name = the file's name)."""
    template = _with_catalog(
        tenant, lambda c: c.add_template(file, brand=brand, name=name, tags=tag or [])
    )
    console.print(
        f"added template {template.storage_name} ({template.width}x{template.height})  "
        f"id={template.id}"
    )


@templates_app.command("sync")
def templates_sync(
    brand: str | None = typer.Option(None, help="Catalog new templates under this brand id."),
    tenant: str | None = TenantOption,
) -> None:
    """Catalog the templates in template storage (add new, deactivate vanished)."""
    from scheduler.commands.common import parse_uuid

    brand_id = parse_uuid(brand, "--brand") if brand else None
    tenant_uuid = tenant_id(tenant)

    async def go() -> Any:
        from flows.templates import sync_template_catalog

        return await sync_template_catalog(tenant_uuid, brand_id=brand_id)

    report = run(go)
    console.print(
        f"added {len(report.added)}, reactivated {len(report.reactivated)}, "
        f"deactivated {len(report.deactivated)}, unchanged {report.unchanged}"
    )


@templates_app.command("list")
def templates_list(
    inactive: bool = typer.Option(False, "--inactive", help="Only templates out of rotation."),
    tenant: str | None = TenantOption,
) -> None:
    """The template catalog, with why a template is out of rotation."""
    rows = _with_catalog(tenant, lambda c: c.list_templates(inactive_only=inactive))
    table = Table(title=f"{len(rows)} template(s)")
    for column in ("Template", "Name", "Source", "Size", "Status", "Why"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.storage_name,
            row.name,
            row.source,
            f"{row.width}x{row.height}",
            "active" if row.active else "inactive",
            row.inactive_reason or "",
        )
    console.print(table)


@templates_app.command("update")
def templates_update(  # noqa: PLR0917 (one typer option per parameter)
    template: Annotated[str, typer.Argument(metavar="TEMPLATE", help="Id or storage name.")],
    name: str | None = typer.Option(None, help="New display name."),
    brand: str | None = typer.Option(None, help="Only for this brand (id or name)."),
    shared: bool = typer.Option(False, "--shared", help="For every brand (no brand)."),
    tag: Tags = None,
    tenant: str | None = TenantOption,
) -> None:
    """Change a template's display name, brand or tags (--tag replaces the tags)."""
    if name is None and brand is None and not shared and tag is None:
        raise UsageProblem("nothing to change; allowed: --name, --brand, --shared, --tag")
    updated = _with_catalog(
        tenant,
        lambda c: c.update_template(template, name=name, brand=brand, shared=shared, tags=tag),
    )
    console.print(f"updated template {updated.storage_name}")


@templates_app.command("deactivate")
def templates_deactivate(
    names: Annotated[
        list[str], typer.Argument(metavar="TEMPLATE...", help="Ids or storage names.")
    ],
    reason: str | None = typer.Option(None, help="Why (shown in `templates list`)."),
    tenant: str | None = TenantOption,
) -> None:
    """Take templates out of rotation (`templates enable` puts them back)."""

    async def each(catalog: CatalogManager) -> list[Any]:
        return [await catalog.deactivate_template(n, reason=reason) for n in names]

    for template in _with_catalog(tenant, each):
        console.print(f"{template.storage_name}: deactivated")


@templates_app.command("enable")
def templates_enable(
    names: Annotated[list[str], typer.Argument(metavar="NAME...", help="Template storage names.")],
    tenant: str | None = TenantOption,
) -> None:
    """Put templates back in rotation (after fixing what got them set aside)."""

    async def each(catalog: CatalogManager) -> list[bool]:
        return [await catalog.enable_template(n) for n in names]

    changed = _with_catalog(tenant, each)
    for name, did in zip(names, changed, strict=True):
        console.print(f"{name}: {'enabled' if did else 'already active'}")


def register(app: typer.Typer) -> None:
    """Mount `brands …`, `products …` and `templates …` on the root command."""
    app.add_typer(brands_app, name="brands")
    app.add_typer(products_app, name="products")
    app.add_typer(templates_app, name="templates")
