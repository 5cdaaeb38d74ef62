"""Catalog management (issue 13 item 1): brands, products and templates from the CLI and the SDK,
against the real database; `jobs create` takes a product by name. Bad input names the field,
exits 2 and writes nothing."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from PIL import Image
from typer.testing import CliRunner

from db.errors import ConflictError, NotFoundError
from db.models import AdTemplate, Brand, Product, ScheduledJob
from db.session import session_scope
from domain.catalog import InvalidCatalogInput
from domain.errors import InvalidJobSpec
from scheduler import cli as cli_module
from scheduler.catalog import CatalogManager
from scheduler.cli import app
from tests.scheduler.conftest import Catalog
from tests.scheduler.test_cli import assert_short_error

runner = CliRunner()


def _count(db_url: str, model: Any, tenant_id: uuid.UUID) -> int:
    async def go() -> int:
        async with session_scope(db_url) as session:
            return int(
                await session.scalar(
                    sa.select(sa.func.count())
                    .select_from(model)
                    .where(model.tenant_id == tenant_id)
                )
                or 0
            )

    return asyncio.run(go())


@pytest.fixture
def catalog_cli(
    use_database: str, tenant_id: uuid.UUID, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """Invoke the CLI for a fresh tenant (catalog commands need no Prefect server)."""
    monkeypatch.setattr(cli_module.console, "width", 200)

    def invoke(*args: str, ok: bool = True) -> Any:
        result = runner.invoke(app, [*args, "--tenant", str(tenant_id)])
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return invoke


def _image(folder: Path, name: str, size: tuple[int, int] = (64, 48)) -> Path:
    path = folder / name
    Image.new("RGB", size, "#0f766e").save(path)
    return path


def test_brands_and_products_through_the_cli(
    catalog_cli: Any, use_database: str, tenant_id: uuid.UUID
) -> None:
    out = catalog_cli("brands", "create", "Northwind", "--color", "#0f766e", "--color", "#F97316")
    assert "created brand Northwind" in out.output
    made = catalog_cli(
        "products",
        "create",
        "Trail Runner 2",
        "--brand",
        "Northwind",
        "--description",
        "A light trail shoe.",
        "--benefit",
        "Grips wet rock",
        "--benefit",
        "Weighs 240 g",
        "--image",
        "products/trail.png",
    ).output
    assert "created product Trail Runner 2 (Northwind)" in made
    assert "ad-scheduler jobs create" in made and "--product" in made

    listed = catalog_cli("products", "list").output
    assert "Trail Runner 2" in listed and "Grips wet rock; Weighs 240 g" in listed
    catalog_cli("products", "update", "Trail Runner 2", "--hook", "Own the trail")
    catalog_cli("brands", "update", "Northwind", "--name", "Northwind Outdoors")
    assert "Northwind Outdoors" in catalog_cli("brands", "list").output

    async def product_row() -> Product:
        async with session_scope(use_database) as session:
            row = await session.scalar(sa.select(Product).where(Product.tenant_id == tenant_id))
            assert row is not None
            return row

    product = asyncio.run(product_row())
    assert product.hooks == ["Own the trail"]
    assert product.brand_colors == ["#0f766e", "#F97316"]  # the brand's, by default
    assert product.key_benefits == ["Grips wet rock", "Weighs 240 g"]

    deactivated = catalog_cli("products", "deactivate", str(product.id)).output
    assert "deactivated product Trail Runner 2" in deactivated
    assert "0 product(s)" in catalog_cli("products", "list").output
    assert "deactivated" in catalog_cli("products", "list", "--all").output
    catalog_cli("brands", "deactivate", "Northwind Outdoors")
    refused = catalog_cli("products", "create", "Other", "--brand", "Northwind Outdoors", ok=False)
    assert_short_error(refused, 2, "brand", "is deactivated")
    catalog_cli("brands", "update", "Northwind Outdoors", "--active")
    catalog_cli("products", "update", "Trail Runner 2", "--active")
    assert "Trail Runner 2" in catalog_cli("products", "list").output


def test_bad_catalog_input_names_the_field_and_writes_nothing(
    catalog_cli: Any, use_database: str, tenant_id: uuid.UUID, tmp_path: Path
) -> None:
    colour = catalog_cli("brands", "create", "B", "--color", "teal", ok=False)
    assert_short_error(colour, 2, "invalid brand", "colors.0", "#rrggbb")
    empty = catalog_cli("brands", "create", " ", ok=False)
    assert_short_error(empty, 2, "name")
    assert _count(use_database, Brand, tenant_id) == 0

    catalog_cli("brands", "create", "B")
    taken = catalog_cli("brands", "create", "B", ok=False)
    assert_short_error(taken, 2, "brand with name='B' already exists")
    nobrand = catalog_cli("products", "create", "P", "--brand", "nope", ok=False)
    assert_short_error(nobrand, 2, "brand nope not found")
    long_benefit = catalog_cli(
        "products", "create", "P", "--brand", "B", "--benefit", "x" * 201, ok=False
    )
    assert_short_error(long_benefit, 2, "key_benefits.0")
    assert _count(use_database, Product, tenant_id) == 0

    catalog_cli("products", "create", "P", "--brand", "B")
    again = catalog_cli("products", "create", "P", "--brand", "B", ok=False)
    assert_short_error(again, 2, "product with name='P' already exists")
    nothing = catalog_cli("products", "update", "P", ok=False)
    assert_short_error(nothing, 2, "nothing to change")
    assert_short_error(
        catalog_cli("products", "update", "Q", "--name", "R", ok=False), 2, "not found"
    )

    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image")
    bad_file = catalog_cli("templates", "add", str(not_image), ok=False)
    assert_short_error(bad_file, 2, "invalid template", "file", "not a readable image")
    bad_name = catalog_cli("templates", "add", str(_image(tmp_path, "bad name.png")), ok=False)
    assert_short_error(bad_name, 2, "storage_name", "allowed:")
    assert _count(use_database, AdTemplate, tenant_id) == 0


def test_templates_add_update_deactivate_enable(
    catalog_cli: Any, use_database: str, tenant_id: uuid.UUID, data_dir: Path, tmp_path: Path
) -> None:
    catalog_cli("brands", "create", "B")
    added = catalog_cli("templates", "add", str(_image(tmp_path, "summer.png")), "--brand", "B")
    assert "added template summer.png (64x48)" in added.output
    assert (data_dir / "storage" / "templates" / "summer.png").is_file()
    dup = catalog_cli("templates", "add", str(_image(tmp_path, "summer.png")), ok=False)
    assert_short_error(dup, 2, "template with storage_name='summer.png' already exists")

    catalog_cli("templates", "update", "summer.png", "--name", "Summer sale", "--tag", "sale")
    catalog_cli("templates", "deactivate", "summer.png", "--reason", "off brand")
    # Its file is still in storage, but a sync does not undo a person's deactivation.
    assert "reactivated 0" in catalog_cli("templates", "sync").output
    listed = catalog_cli("templates", "list", "--inactive").output
    assert "Summer sale" in listed and "deactivated by a person: off brand" in listed
    assert "summer.png: enabled" in catalog_cli("templates", "enable", "summer.png").output
    assert "0 template(s)" in catalog_cli("templates", "list", "--inactive").output
    catalog_cli("templates", "update", "summer.png", "--shared")

    async def row() -> AdTemplate:
        async with session_scope(use_database) as session:
            found = await session.scalar(
                sa.select(AdTemplate).where(AdTemplate.tenant_id == tenant_id)
            )
            assert found is not None
            return found

    template = asyncio.run(row())
    assert (template.name, template.tags, template.brand_id, template.active) == (
        "Summer sale",
        ["sale"],
        None,
        True,
    )


async def test_the_sdk_catalog_is_tenant_scoped(db_url: str, tenant_id: uuid.UUID) -> None:
    ours = CatalogManager(tenant_id, database_url=db_url)
    theirs = CatalogManager(uuid.uuid4(), database_url=db_url)
    brand = await ours.create_brand("Acme", colors=["#112233"])
    await theirs.create_brand("Acme")  # names are per tenant
    first = await ours.create_product("Acme", name="Rocket", key_benefits=["Fast"])
    assert first.brand_colors == ["#112233"] and first.brand_name == "Acme"
    with pytest.raises(NotFoundError):
        await theirs.product(first.id)
    assert [p.id for p in await ours.list_products(brand=brand.id)] == [first.id]

    other_brand = await ours.create_brand("Beta")
    second = await ours.create_product(other_brand.id, name="Rocket")
    with pytest.raises(InvalidCatalogInput) as ambiguous:
        await ours.resolve_product_id("Rocket")
    assert ambiguous.value.fields == ["product_id"]
    assert str(first.id) in str(ambiguous.value) and str(second.id) in str(ambiguous.value)
    with pytest.raises(InvalidJobSpec, match="product_id: no product 'Nope'"):
        await ours.resolve_product_id("Nope")
    assert await ours.resolve_product_id(str(second.id)) == second.id

    with pytest.raises(InvalidCatalogInput) as bad:
        await ours.update_product(first.id, brand_colors=["#12"], hooks=[""])
    assert sorted(bad.value.fields) == ["brand_colors.0", "hooks.0"]
    await ours.update_product(second.id, name="Rocket 2")
    with pytest.raises(ConflictError):
        await ours.create_product(other_brand.id, name="Rocket 2")
    assert (await ours.product(first.id)).hooks == []  # the failed update wrote nothing
    product, live_jobs = await ours.deactivate_product(first.id)
    assert (product.active, live_jobs) == (False, 0)
    assert [p.name for p in await ours.list_products(include_inactive=True)] == [
        "Rocket",
        "Rocket 2",
    ]


def test_jobs_create_takes_a_product_by_name(
    prefect_api: str, catalog: Catalog, use_database: str, data_dir: Path, monkeypatch: Any
) -> None:
    monkeypatch.setattr(cli_module.console, "width", 200)

    def cli(*args: str, ok: bool = True) -> Any:
        result = runner.invoke(app, [*args, "--tenant", str(catalog.tenant_id)])
        if ok:
            assert result.exit_code == 0, result.output
        return result

    name = catalog.product.name
    cli("jobs", "create", "--name", "By name", "--product", name, "--cron", "0 9 * * 1")

    async def job_product() -> uuid.UUID:
        async with session_scope(catalog.db_url) as session:
            found = await session.scalar(
                sa.select(ScheduledJob.product_id).where(
                    ScheduledJob.tenant_id == catalog.tenant_id, ScheduledJob.name == "By name"
                )
            )
            assert found is not None
            return found

    assert asyncio.run(job_product()) == catalog.product.id
    unknown = cli(
        "jobs", "create", "--name", "X", "--product", "No such", "--cron", "0 9 * * 1", ok=False
    )
    assert_short_error(unknown, 2, "product_id", "no product 'No such'")

    # A second product of the same name (another brand): the name alone is ambiguous.
    async def twin() -> None:
        brand = await CatalogManager(catalog.tenant_id, database_url=catalog.db_url).create_brand(
            "Twin brand"
        )
        await CatalogManager(catalog.tenant_id, database_url=catalog.db_url).create_product(
            brand.id, name=name
        )

    asyncio.run(twin())
    both = cli("jobs", "create", "--name", "Y", "--product", name, "--cron", "0 9 * * 1", ok=False)
    assert_short_error(both, 2, "product_id", f"2 products are named {name!r}")
    assert "Y" not in cli("jobs", "list").output.split()

    # A deactivated product takes no new jobs; its existing job is untouched.
    cli("products", "deactivate", str(catalog.product.id))
    refused = cli(
        "jobs",
        "create",
        "--name",
        "Z",
        "--product",
        str(catalog.product.id),
        "--cron",
        "0 9 * * 1",
        ok=False,
    )
    assert_short_error(refused, 2, "product_id", "is deactivated")
    assert "By name" in cli("jobs", "list").output
