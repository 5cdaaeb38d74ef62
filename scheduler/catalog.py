"""Catalog management: a tenant's brands, products and templates (the database only).

```python
from scheduler.sdk import AdScheduler

ads = AdScheduler(tenant_id)
brand = await ads.catalog.create_brand("Northwind", colors=["#0f766e"])
product = await ads.catalog.create_product(brand.name, name="Trail Runner 2",
                                           key_benefits=["Grips wet rock"])
await ads.catalog.deactivate_product(product.id)
```

Every input is validated (`domain.catalog`) before anything is written; a bad one raises
`InvalidCatalogInput` naming the field and what is allowed. A brand, product or template is
referred to by id or by name (a template by its storage name); another tenant's is "not found".
Deactivating never deletes: a deactivated brand takes no new products, a deactivated product no
new jobs (its jobs keep running), a deactivated template leaves the rotation until enabled.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from db.errors import ConflictError, NotFoundError
from db.models import Brand, Product
from db.queries import catalog as q
from db.queries.templates import enable_template
from db.read_models import BrandView, ProductView, TemplateView
from domain.catalog import (
    BrandFields,
    InvalidCatalogInput,
    ProductFields,
    TemplateFields,
    validated,
)
from domain.errors import InvalidJobSpec
from scheduler.db_access import transaction
from scheduler.errors import StorageError


def _product_view(product: Product, brand_name: str) -> ProductView:
    data = {c: getattr(product, c) for c in ProductView.model_fields if c != "brand_name"}
    return ProductView(brand_name=brand_name, **data)


class CatalogManager:
    """Tenant-scoped catalog calls; also reachable as `AdScheduler(...).catalog`.

    Args:
        tenant_id: Every call acts for this tenant only.
        database_url: The application database (default: settings / `DATABASE_URL`).
    """

    def __init__(self, tenant_id: uuid.UUID, *, database_url: str | None = None) -> None:
        self.tenant_id = tenant_id
        self._db_url = database_url

    # -- brands ------------------------------------------------------------------------------

    async def create_brand(self, name: str, *, colors: Sequence[str] = ()) -> BrandView:
        """A new brand; `colors` are hex colours like `#0f766e`.

        Raises:
            InvalidCatalogInput: A bad name or colour. ConflictError: the name is taken.
        """
        fields = validated(BrandFields, "brand", {"name": name, "colors": list(colors)})
        async with transaction(self._db_url) as session:
            brand = await q.add_brand(
                session, tenant_id=self.tenant_id, name=fields.name, colors=fields.colors
            )
            return BrandView.of(brand)

    async def list_brands(self, *, include_inactive: bool = False) -> list[BrandView]:
        """The tenant's brands by name (active ones only, unless asked)."""
        async with transaction(self._db_url) as session:
            rows = await q.list_brands(
                session, tenant_id=self.tenant_id, include_inactive=include_inactive
            )
            return [BrandView.of(row) for row in rows]

    async def brand(self, ref: str | uuid.UUID) -> BrandView:
        """One brand by id or name; `NotFoundError` otherwise."""
        async with transaction(self._db_url) as session:
            return BrandView.of(await self._brand(session, str(ref)))

    async def update_brand(
        self,
        ref: str | uuid.UUID,
        *,
        name: str | None = None,
        colors: Sequence[str] | None = None,
        active: bool | None = None,
    ) -> BrandView:
        """Change a brand's name, colours or `active` flag (None: unchanged).

        Raises:
            InvalidCatalogInput, ConflictError (name taken), NotFoundError.
        """
        async with transaction(self._db_url) as session:
            brand = await self._brand(session, str(ref), for_update=True)
            merged = {
                "name": brand.name if name is None else name,
                "colors": list(brand.colors if colors is None else colors),
            }
            fields = validated(BrandFields, "brand", merged)
            if fields.name != brand.name and await q.rename_clashes_brand(
                session, tenant_id=self.tenant_id, brand_id=brand.id, name=fields.name
            ):
                raise ConflictError("brand", "name", fields.name)
            brand.name, brand.colors = fields.name, fields.colors
            if active is not None:
                brand.active = active
            await session.flush()
            return BrandView.of(brand)

    async def deactivate_brand(self, ref: str | uuid.UUID) -> BrandView:
        """Take a brand out of use: no new products under it (its products stay as they are)."""
        return await self.update_brand(ref, active=False)

    # -- products ----------------------------------------------------------------------------

    async def create_product(
        self,
        brand: str | uuid.UUID,
        *,
        name: str,
        description: str = "",
        key_benefits: Sequence[str] = (),
        brand_colors: Sequence[str] | None = None,
        image_paths: Sequence[str] = (),
        hooks: Sequence[str] = (),
    ) -> ProductView:
        """A new product of an active brand (`brand_colors` default to the brand's colours).

        Raises:
            InvalidCatalogInput: A bad field, or the brand is deactivated.
            ConflictError: The brand already has a product of that name.
            NotFoundError: No such brand.
        """
        data: dict[str, Any] = {
            "name": name,
            "description": description,
            "key_benefits": list(key_benefits),
            "image_paths": list(image_paths),
            "hooks": list(hooks),
        }
        if brand_colors is not None:
            data["brand_colors"] = list(brand_colors)
        fields = validated(ProductFields, "product", data)
        async with transaction(self._db_url) as session:
            owner = await self._brand(session, str(brand))
            if not owner.active:
                raise InvalidCatalogInput.one(
                    "product",
                    "brand",
                    f"brand {owner.name!r} is deactivated; allowed: an active brand",
                )
            if await q.product_name_taken(
                session, tenant_id=self.tenant_id, brand_id=owner.id, name=fields.name
            ):
                raise ConflictError("product", "name", fields.name)
            values = fields.model_dump()
            if brand_colors is None:
                values["brand_colors"] = list(owner.colors)
            product = await q.add_product(
                session, tenant_id=self.tenant_id, brand_id=owner.id, values=values
            )
            return _product_view(product, owner.name)

    async def list_products(
        self, *, brand: str | uuid.UUID | None = None, include_inactive: bool = False
    ) -> list[ProductView]:
        """The tenant's products (of one brand, when given), active ones only unless asked."""
        async with transaction(self._db_url) as session:
            brand_id = (await self._brand(session, str(brand))).id if brand is not None else None
            rows = await q.list_products(
                session,
                tenant_id=self.tenant_id,
                brand_id=brand_id,
                include_inactive=include_inactive,
            )
            return [_product_view(product, brand_name) for product, brand_name in rows]

    async def product(self, ref: str | uuid.UUID, *, field: str = "product") -> ProductView:
        """One product by id or name.

        Raises:
            NotFoundError: No product of the tenant has that id or name.
            InvalidCatalogInput: The name belongs to several products (`field` is the name of
                the input that carried it); the message lists them by brand and id.
        """
        async with transaction(self._db_url) as session:
            product, brand_name = await self._product(session, str(ref), field=field)
            return _product_view(product, brand_name)

    async def update_product(
        self, ref: str | uuid.UUID, *, active: bool | None = None, **changes: Any
    ) -> ProductView:
        """Change a product's fields (`name`, `description`, `key_benefits`, `brand_colors`,
        `image_paths`, `hooks`; None: unchanged) or its `active` flag. Its brand stays.

        Raises:
            InvalidCatalogInput, ConflictError (name taken within the brand), NotFoundError.
        """
        unknown = sorted(set(changes) - set(ProductFields.model_fields))
        if unknown:
            raise InvalidCatalogInput.one(
                "product",
                unknown[0],
                f"not a product field; allowed: {', '.join(ProductFields.model_fields)}",
            )
        async with transaction(self._db_url) as session:
            product, brand_name = await self._product(session, str(ref), for_update=True)
            merged = {f: getattr(product, f) for f in ProductFields.model_fields}
            merged.update({k: v for k, v in changes.items() if v is not None})
            fields = validated(ProductFields, "product", merged)
            if fields.name != product.name and await q.product_name_taken(
                session,
                tenant_id=self.tenant_id,
                brand_id=product.brand_id,
                name=fields.name,
                other_than=product.id,
            ):
                raise ConflictError("product", "name", fields.name)
            for key, value in fields.model_dump().items():
                setattr(product, key, value)
            if active is not None:
                product.active = active
            await session.flush()
            return _product_view(product, brand_name)

    async def deactivate_product(self, ref: str | uuid.UUID) -> tuple[ProductView, int]:
        """Take a product out of use: no new jobs for it. Its live jobs keep running (pause or
        delete them to stop them); returns the product and how many live jobs it still has."""
        product = await self.update_product(ref, active=False)
        async with transaction(self._db_url) as session:
            return product, await q.live_job_count(session, product_id=product.id)

    async def resolve_product_id(
        self, ref: str | uuid.UUID, *, field: str = "product_id"
    ) -> uuid.UUID:
        """The id of the product `ref` names (an id, or a name of exactly one product).

        Raises:
            InvalidJobSpec: Naming `field`: no such product, or the name is ambiguous.
        """
        try:
            return (await self.product(ref, field=field)).id
        except NotFoundError:
            names = sorted({p.name for p in await self.list_products()})
            known = ", ".join(names[:20]) + (", …" if len(names) > 20 else "") or "none yet"
            raise InvalidJobSpec.one(
                field,
                f"no product {str(ref)!r} in this tenant; allowed: a product id or name "
                f"({known}; see `ad-scheduler products list`)",
            ) from None

    # -- templates ---------------------------------------------------------------------------

    async def add_template(
        self,
        file: Path,
        *,
        brand: str | uuid.UUID | None = None,
        name: str | None = None,
        tags: Sequence[str] = (),
    ) -> TemplateView:
        """Store an image in template storage under its file name and catalog it (library).

        Raises:
            InvalidCatalogInput: Not a readable image of an allowed type, or a bad field.
            ConflictError: The storage name is catalogued already. NotFoundError: no such brand.
            StorageError: Template storage refused the write (nothing catalogued).
        """
        from scheduler.uploads import read_upload

        fields = validated(
            TemplateFields,
            "template",
            {"storage_name": file.name, "name": name or file.stem, "tags": list(tags)},
        )
        try:
            image = read_upload(0, file)
        except InvalidJobSpec as exc:
            raise InvalidCatalogInput.one("template", "file", exc.problems[0].message) from None
        async with transaction(self._db_url) as session:
            brand_id = (await self._brand(session, str(brand))).id if brand is not None else None
            template = await q.add_template(
                session,
                tenant_id=self.tenant_id,
                storage_name=fields.storage_name,
                width=image.width,
                height=image.height,
                name=fields.name,
                brand_id=brand_id,
                tags=fields.tags,
            )
            # The row is flushed (its name is free): now the file; a failed write rolls back.
            from blocks.storage import load_storage

            storage = await load_storage()
            try:
                await storage.write(storage.template_path(fields.storage_name), image.data)
            except (OSError, ValueError) as exc:
                raise StorageError(
                    f"could not store the template {file.name} ({type(exc).__name__}); check "
                    "the template storage block or AD_SCHEDULER_DATA_DIR"
                ) from exc
            return TemplateView.of(template)

    async def list_templates(self, *, inactive_only: bool = False) -> list[TemplateView]:
        """The tenant's templates by storage name (only those out of rotation, when asked)."""
        async with transaction(self._db_url) as session:
            rows = await q.list_templates(
                session, tenant_id=self.tenant_id, inactive_only=inactive_only
            )
            return [TemplateView.of(row) for row in rows]

    async def update_template(
        self,
        ref: str | uuid.UUID,
        *,
        name: str | None = None,
        brand: str | uuid.UUID | None = None,
        shared: bool = False,
        tags: Sequence[str] | None = None,
    ) -> TemplateView:
        """Change a template's display name, tags or brand (`shared=True`: no brand, usable
        by every product). Its storage name (its identity in storage) stays.

        Raises:
            InvalidCatalogInput, NotFoundError (template or brand).
        """
        if shared and brand is not None:
            raise InvalidCatalogInput.one(
                "template", "brand", "a brand and shared both given; allowed: one of them"
            )
        async with transaction(self._db_url) as session:
            template = await q.find_template(
                session, tenant_id=self.tenant_id, ref=str(ref), for_update=True
            )
            fields = validated(
                TemplateFields,
                "template",
                {
                    "storage_name": template.storage_name,
                    "name": template.name if name is None else name,
                    "tags": list(template.tags if tags is None else tags),
                },
            )
            template.name, template.tags = fields.name, fields.tags
            if shared:
                template.brand_id = None
            elif brand is not None:
                template.brand_id = (await self._brand(session, str(brand))).id
            await session.flush()
            return TemplateView.of(template)

    async def deactivate_template(
        self, ref: str | uuid.UUID, *, reason: str | None = None
    ) -> TemplateView:
        """Take a template out of rotation (`templates sync` leaves it out; `enable` puts it
        back); `reason` is shown in `templates list`."""
        async with transaction(self._db_url) as session:
            template = await q.deactivate_template(
                session, tenant_id=self.tenant_id, ref=str(ref), reason=reason
            )
            return TemplateView.of(template)

    async def enable_template(self, ref: str) -> bool:
        """Put a template back in rotation; False when it was active already."""
        async with transaction(self._db_url) as session:
            template = await q.find_template(session, tenant_id=self.tenant_id, ref=ref)
            return await enable_template(
                session, tenant_id=self.tenant_id, template=template.storage_name
            )

    # -- lookups -----------------------------------------------------------------------------

    async def _brand(self, session: Any, ref: str, *, for_update: bool = False) -> Brand:
        found = await q.find_brands(
            session, tenant_id=self.tenant_id, ref=ref, for_update=for_update
        )
        if not found:
            raise NotFoundError("brand", ref)
        return found[0]

    async def _product(
        self, session: Any, ref: str, *, field: str = "product", for_update: bool = False
    ) -> tuple[Product, str]:
        found = await q.find_products(
            session, tenant_id=self.tenant_id, ref=ref, for_update=for_update
        )
        if not found:
            raise NotFoundError("product", ref)
        if len(found) > 1:
            which = "; ".join(f"{p.id} (brand {b})" for p, b in found)
            raise InvalidCatalogInput.one(
                "product",
                field,
                f"{len(found)} products are named {ref!r}; allowed: one of their ids: {which}",
            )
        return found[0]


__all__ = ["CatalogManager", "InvalidCatalogInput"]
