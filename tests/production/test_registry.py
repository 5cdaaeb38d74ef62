"""The block registry knows every block class the project ships, and loads by reference only."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import uuid

import pytest
from prefect.blocks.core import Block

import blocks
import blocks.shipped
from blocks.registry import BLOCK_CLASSES, BlockNotFoundError, block_class, load_block
from config import PROJECT_ROOT


def _project_block_classes() -> set[type[Block]]:
    found: set[type[Block]] = set()
    for info in pkgutil.walk_packages(blocks.__path__, "blocks."):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, Block)
                and value.__module__ == module.__name__
                and "_block_type_slug" in vars(value)
            ):
                found.add(value)
    return found


def test_every_block_class_in_the_package_is_registered_and_shipped() -> None:
    shipped = {v for v in vars(blocks.shipped).values() if isinstance(v, type)}
    for cls in _project_block_classes():
        slug = cls.get_block_type_slug()
        assert slug in BLOCK_CLASSES, f"{cls.__name__} ({slug}) is missing from BLOCK_CLASSES"
        assert block_class(slug) is cls
        assert cls in shipped, f"{cls.__name__} is missing from blocks/shipped.py"
    for slug in BLOCK_CLASSES:
        assert block_class(slug).get_block_type_slug() == slug


def test_an_unknown_slug_names_the_known_ones() -> None:
    with pytest.raises(BlockNotFoundError, match="known: .*http-ad-generator"):
        block_class("no-such-type")


def test_the_flow_entrypoint_does_not_import_every_provider_sdk() -> None:
    # A fresh process, as a worker starts one: the Resend SDK and the provider generators are
    # imported only when a run names them.
    code = (
        "import sys, flows.scheduled_job, flows.create_ads, flows.reconcile;"
        "print(sorted(m for m in ('resend', 'blocks.generators.gemini',"
        " 'blocks.generators.http_service') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.usefixtures("prefect_api")
async def test_load_block_by_reference_checks_the_kind_and_says_what_is_missing() -> None:
    from blocks.generators.base import AdGenerator
    from blocks.generators.local import LocalAdRenderer
    from blocks.slack_webhook import SlackIncomingWebhook

    name = f"local-{uuid.uuid4().hex[:8]}"
    await LocalAdRenderer(provider_limit=f"lim-{name}").asave(name)
    # The first listed type has no block of that name: the next one is found and loaded.
    loaded = await load_block(
        name, AdGenerator, slugs=("gemini-image-generator", "ad-scheduler-local-renderer")
    )
    assert isinstance(loaded, LocalAdRenderer) and loaded.provider_limit == f"lim-{name}"
    with pytest.raises(BlockNotFoundError, match="not a 'ad-scheduler-slack-webhook' block"):
        await load_block(f"ad-scheduler-local-renderer/{name}", SlackIncomingWebhook)
    with pytest.raises(BlockNotFoundError, match="no 'ad-scheduler-slack-webhook' block named"):
        await load_block("nobody", SlackIncomingWebhook)


class _OwnRenderer(Block):
    """A generator-like block type of the user's own, not one ad-scheduler ships."""

    _block_type_slug = "test-own-renderer"
    size: int = 1


@pytest.mark.usefixtures("prefect_api")
async def test_a_block_type_of_the_users_own_loads_when_its_module_is_imported() -> None:
    name = f"own-{uuid.uuid4().hex[:8]}"
    await _OwnRenderer(size=3).asave(name)
    loaded = await load_block(f"test-own-renderer/{name}", Block)
    assert isinstance(loaded, _OwnRenderer) and loaded.size == 3
    with pytest.raises(BlockNotFoundError, match="no module imported by this process defines it"):
        await load_block(f"never-imported-type/{name}", Block)
