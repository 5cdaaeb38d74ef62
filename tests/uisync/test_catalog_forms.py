"""The catalog forms (scheduler/catalog_forms.py) run as real flow runs on a real Prefect server
and a real database: they manage brands, products and templates exactly as the SDK does, and
refuse bad input with its messages, writing nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from prefect.client.orchestration import get_client
from prefect.utilities.callables import parameter_schema

from config import get_settings
from db.models import Brand, Product
from db.session import session_scope
from domain.catalog import InvalidCatalogInput
from scheduler import catalog_forms
from scheduler.catalog import CatalogManager
from tests.scheduler.conftest import Catalog


@pytest.fixture
def form_tenant(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> Iterator[uuid.UUID]:
    """The forms act for the catalog's tenant, on its database (as a worker's settings would)."""
    monkeypatch.setenv("AD_SCHEDULER_TENANT_ID", str(catalog.tenant_id))
    monkeypatch.setenv("DATABASE_URL", catalog.db_url)
    get_settings.cache_clear()
    yield catalog.tenant_id
    get_settings.cache_clear()


async def _rows(db_url: str, tenant_id: uuid.UUID) -> tuple[list[Brand], list[Product]]:
    async with session_scope(db_url) as session:
        brands = list(
            await session.scalars(
                sa.select(Brand).where(Brand.tenant_id == tenant_id).order_by(Brand.name)
            )
        )
        products = list(
            await session.scalars(
                sa.select(Product).where(Product.tenant_id == tenant_id).order_by(Product.name)
            )
        )
        return brands, products


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_forms_create_update_deactivate_and_list_the_catalog(
    prefect_api: str, catalog: Catalog, form_tenant: uuid.UUID
) -> None:
    sdk = CatalogManager(catalog.tenant_id, database_url=catalog.db_url)

    created = await catalog_forms.save_brand(
        brand=catalog_forms.BrandForm(name="Northwind", colors=["#0f766e"]), return_state=True
    )
    assert created.is_completed(), created.message
    assert "created brand 'Northwind'" in (created.message or "")
    updated = await catalog_forms.save_brand(
        brand=catalog_forms.BrandForm(name="Northwind", colors=["#112233", "#445566"]),
        return_state=True,
    )
    assert updated.is_completed(), updated.message
    brand = await sdk.brand("Northwind")
    assert str(brand.id) == str(await updated.result()) == str(await created.result())
    assert brand.colors == ["#112233", "#445566"] and brand.active

    form = catalog_forms.ProductForm(
        brand="Northwind",
        name="Trail Runner 3",
        description="A lighter trail shoe.",
        key_benefits=["Grips wet rock", "Dries fast"],
        image_paths=["products/trail-3.png"],
        hooks=["Run further"],
    )
    made = await catalog_forms.save_product(product=form, return_state=True)
    assert made.is_completed(), made.message
    product = await sdk.product(str(await made.result()))
    assert (product.brand_name, product.description, product.key_benefits) == (
        "Northwind",
        "A lighter trail shoe.",
        ["Grips wet rock", "Dries fast"],
    )
    assert product.brand_colors == ["#112233", "#445566"]  # empty: the brand's colours
    assert product.image_paths == ["products/trail-3.png"] and product.hooks == ["Run further"]

    changed = await catalog_forms.save_product(
        product=form.model_copy(update={"key_benefits": ["Grips"], "brand_colors": ["#abcdef"]}),
        return_state=True,
    )
    assert changed.is_completed(), changed.message
    again = await sdk.product(product.id)
    assert again.id == product.id  # same name in the same brand: that product, updated
    assert (again.key_benefits, again.brand_colors) == (["Grips"], ["#abcdef"])

    template = catalog.templates[0].storage_name
    for kind, name in (
        ("product", "Trail Runner 3"),
        ("brand", "Northwind"),
        ("template", template),
    ):
        state = await catalog_forms.deactivate_catalog_item(
            kind=kind, name=name, reason="retired", return_state=True
        )
        assert state.is_completed(), state.message
        assert f"deactivated {kind} '{name}'" in (state.message or "")
    assert not (await sdk.product(product.id)).active
    assert not (await sdk.brand(brand.id)).active
    [out] = await sdk.list_templates(inactive_only=True)
    assert out.storage_name == template and "retired" in (out.inactive_reason or "")

    listed = await catalog_forms.list_catalog(return_state=True)
    assert listed.is_completed(), listed.message
    listing = await listed.result()
    assert {(b["name"], b["active"]) for b in listing["brands"]} >= {("Northwind", False)}
    assert ("Trail Runner 3", "Northwind", False) in {
        (p["name"], p["brand"], p["active"]) for p in listing["products"]
    }
    assert (catalog.product.name, True) in {(p["name"], p["active"]) for p in listing["products"]}
    assert {t["storage_name"]: t["active"] for t in listing["templates"]} == {
        t.storage_name: t.storage_name != template for t in catalog.templates
    }
    async with get_client() as client:
        artifact = await client.read_latest_artifacts()
        markdown = next(a.data for a in artifact if a.key == f"catalog-{catalog.tenant_id}")
    assert isinstance(markdown, str)
    assert "| Northwind | #112233, #445566 | deactivated |" in markdown
    assert "| Trail Runner 3 | Northwind | 1 | 1 | deactivated |" in markdown
    assert f"`{template}`" in markdown and "retired" in markdown

    # Only active items, when asked.
    active = await (
        await catalog_forms.list_catalog(include_inactive=False, return_state=True)
    ).result()
    assert "Northwind" not in {b["name"] for b in active["brands"]}
    assert "Trail Runner 3" not in {p["name"] for p in active["products"]}


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
@pytest.mark.parametrize(
    ("flow_name", "parameters", "field"),
    [
        ("save_brand", {"brand": {"name": "Bad colours", "colors": ["teal"]}}, "colors.0"),
        (
            "save_product",
            {"product": {"brand": "BRAND", "name": "P", "brand_colors": ["#12345"]}},
            "brand_colors.0",
        ),
        (
            "save_product",
            {"product": {"brand": "BRAND", "name": "P", "key_benefits": ["x" * 201]}},
            "key_benefits.0",
        ),
        ("save_product", {"product": {"brand": "No such brand", "name": "P"}}, None),
        ("deactivate_catalog_item", {"kind": "product", "name": "No such product"}, None),
    ],
)
async def test_a_bad_field_fails_the_run_naming_it_and_writes_nothing(
    prefect_api: str,
    catalog: Catalog,
    form_tenant: uuid.UUID,
    flow_name: str,
    parameters: dict[str, Any],
    field: str | None,
) -> None:
    before = await _rows(catalog.db_url, catalog.tenant_id)
    brand_name = before[0][0].name
    if "product" in parameters and parameters["product"]["brand"] == "BRAND":
        parameters["product"]["brand"] = brand_name
    flow_fn = getattr(catalog_forms, flow_name)
    state = await flow_fn(**parameters, return_state=True)
    assert state.is_failed()
    message = state.message or ""
    if field is not None:
        # The field, and what is allowed (a colour's form, a length's limit).
        assert f"{field}:" in message and ("#rrggbb" in message or "200" in message), message
    else:
        assert "No such" in message, message
    after = await _rows(catalog.db_url, catalog.tenant_id)
    assert [(b.name, b.colors, b.active) for b in after[0]] == [
        (b.name, b.colors, b.active) for b in before[0]
    ]
    assert [(p.name, p.active) for p in after[1]] == [(p.name, p.active) for p in before[1]]


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_the_form_refuses_with_the_sdks_own_message(
    prefect_api: str, catalog: Catalog, form_tenant: uuid.UUID
) -> None:
    state = await catalog_forms.save_brand(
        brand=catalog_forms.BrandForm(name="Sdk says", colors=["#zzzzzz"]), return_state=True
    )
    sdk = CatalogManager(catalog.tenant_id, database_url=catalog.db_url)
    with pytest.raises(InvalidCatalogInput) as refused:
        await sdk.create_brand("Sdk says", colors=["#zzzzzz"])
    assert state.is_failed() and state.message == str(refused.value)


def test_every_field_is_described_and_choices_are_dropdowns() -> None:
    kinds = parameter_schema(catalog_forms.deactivate_catalog_item.fn).model_dump()
    assert kinds["properties"]["kind"]["enum"] == ["brand", "product", "template"]
    for flow_fn in catalog_forms.CATALOG_FORM_FLOWS:
        schema = parameter_schema(flow_fn.fn).model_dump()
        defs = schema["definitions"]
        for prop, body in schema["properties"].items():
            assert body.get("description"), f"{flow_fn.name}: {prop} has no description"
        for name, model in defs.items():
            assert model.get("description"), f"{name} has no description"
            for prop, body in model["properties"].items():
                assert body.get("description"), f"{name}.{prop} has no description"


def test_prefect_yaml_deploys_every_catalog_form_with_its_tag() -> None:
    import importlib
    from pathlib import Path

    import yaml

    config = yaml.safe_load((Path(__file__).parents[2] / "prefect.yaml").read_text())
    deployed = {}
    for deployment in config["deployments"]:
        if "catalog-form" in deployment.get("tags", []):
            module, _, name = deployment["entrypoint"].partition(":")
            flow_fn = getattr(
                importlib.import_module(module.removesuffix(".py").replace("/", ".")), name
            )
            deployed[flow_fn.name] = flow_fn
    assert deployed == {f.name: f for f in catalog_forms.CATALOG_FORM_FLOWS}
