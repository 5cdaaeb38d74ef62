"""Every block type ad-scheduler uses, by slug, and the one way to load a saved block by reference.

Prefect turns a saved block document back into an object by looking its type slug up among the
`Block` classes *already imported in this process* (`prefect.utilities.dispatch`). A flow process
started by a worker imports only the flow's entrypoint and what it imports, so
`Block.aload("http-ad-generator/team")` raised `UnknownBlockType` on every worker while passing
in tests that had imported the class themselves. `load_block` never asks Prefect to guess: it
maps the slug to its class here, imports that one module on demand (the offline renderer does
not pay for the Resend SDK, about 0.2 s of imports), and loads through the class.

`blocks.shipped` imports them all eagerly, for `prefect block register -m blocks.shipped`.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TypeVar, cast

from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.utilities.dispatch import lookup_type

#: Block type slug → "module:Class" of every block type a run can name.
BLOCK_CLASSES: dict[str, str] = {
    "ad-scheduler-local-renderer": "blocks.generators.local:LocalAdRenderer",
    "gemini-image-generator": "blocks.generators.gemini:GeminiImageGenerator",
    "http-ad-generator": "blocks.generators.http_service:HttpAdGenerator",
    "ad-storage": "blocks.storage:AdStorage",
    "ad-scheduler-resend-email": "blocks.email_resend:ResendEmail",
    "ad-scheduler-slack-webhook": "blocks.slack_webhook:SlackIncomingWebhook",
    # DATABASE_URL may name one (db/session.py loads it through its class: db sits below blocks).
    "async-sqlalchemy-connector": "prefect_sqlalchemy:AsyncSqlAlchemyConnector",
}

#: Generator block types a bare generator name is looked up in, in this order.
GENERATOR_SLUGS = (
    "ad-scheduler-local-renderer",
    "gemini-image-generator",
    "http-ad-generator",
)

B = TypeVar("B", bound=Block)


class BlockNotFoundError(ValueError):
    """No saved block matches the reference (or it is of another type); the message says which."""


def block_class(slug: str) -> type[Block]:
    """The class of block type `slug`, importing its module now if needed.

    Raises:
        BlockNotFoundError: `slug` is not a block type ad-scheduler ships (names the known ones).
    """
    target = BLOCK_CLASSES.get(slug)
    if target is None:
        known = ", ".join(sorted(BLOCK_CLASSES))
        raise BlockNotFoundError(f"{slug!r} is not a block type ad-scheduler uses (known: {known})")
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cast("type[Block]", cls)


def import_all_block_classes() -> list[type[Block]]:
    """Import every block class in `BLOCK_CLASSES` (so `Block.aload` by slug works too)."""
    return [block_class(slug) for slug in BLOCK_CLASSES]


async def load_block(reference: str, kind: type[B], slugs: Sequence[str] | None = None) -> B:
    """Load the saved block `reference` in any process, whatever it has imported.

    Args:
        reference: `"<block-type-slug>/<name>"`, or a bare `"<name>"`.
        kind: The class (or base class) the block must be an instance of. A bare name is looked
            up as this class when `slugs` is not given.
        slugs: Block types a bare name is looked up in, in this order (the first saved one
            wins), e.g. `GENERATOR_SLUGS`.

    Raises:
        BlockNotFoundError: The slug is unknown, the block is of another kind, or no block of
            that name is saved on the Prefect server (a `ValueError`).
    """
    slug, _, name = reference.rpartition("/")
    if slug:
        candidates = [slug]
    elif slugs:
        candidates = list(slugs)
    else:
        candidates = [kind.get_block_type_slug()]
    for candidate in candidates:
        cls = _class_for(candidate, kind)
        if not issubclass(cls, kind):
            raise BlockNotFoundError(
                f"block {reference!r} is a {candidate!r} block, not a "
                f"{kind.get_block_type_slug()!r} block"
            )
        if len(candidates) > 1 and not await _exists(candidate, name):
            continue
        try:
            return cast("B", await cls.aload(name))
        except ValueError as exc:
            # Only "no such document" means not found; a document that does not validate
            # against its class is an error worth seeing as it is.
            if not isinstance(exc.__cause__, ObjectNotFound):
                raise
            break
    raise BlockNotFoundError(
        f"no {' or '.join(repr(c) for c in candidates)} block named {name!r} is saved on the "
        "Prefect server"
    )


def _class_for(slug: str, kind: type[Block]) -> type[Block]:
    """The class for `slug`: one ad-scheduler ships, else one this process has imported.

    A block type of the user's own (a custom `AdGenerator` subclass, a benchmark's fake) resolves
    when its module is imported in the flow's process, exactly as Prefect itself resolves it.
    """
    if slug in BLOCK_CLASSES:
        return block_class(slug)
    if slug == kind.get_block_type_slug():
        return kind
    try:
        return cast("type[Block]", lookup_type(Block, slug))
    except KeyError:
        known = ", ".join(sorted(BLOCK_CLASSES))
        raise BlockNotFoundError(
            f"{slug!r} is not a block type ad-scheduler ships (known: {known}), and no module "
            "imported by this process defines it"
        ) from None


async def _exists(slug: str, name: str) -> bool:
    # Asking the server first means only the type actually saved under `name` gets imported.
    async with get_client() as client:
        try:
            await client.read_block_document_by_name(name, block_type_slug=slug)
        except ObjectNotFound:
            return False
    return True


__all__ = [
    "BLOCK_CLASSES",
    "GENERATOR_SLUGS",
    "BlockNotFoundError",
    "block_class",
    "import_all_block_classes",
    "load_block",
]
