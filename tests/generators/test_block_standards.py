"""Every block of the project meets Prefect's block conventions (minus the network logo check).

Parametrized over the registry (`blocks/registry.py` BLOCK_CLASSES): generators, storage, email
and Slack. Third-party blocks the registry names (prefect-sqlalchemy's connector) run this suite
in their own package.
"""

from __future__ import annotations

import pytest
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites import BlockStandardTestSuite

from blocks.registry import BLOCK_CLASSES, block_class

PROJECT_BLOCKS = [
    block_class(slug) for slug, target in BLOCK_CLASSES.items() if target.startswith("blocks.")
]


def test_the_registry_names_every_block_of_the_project() -> None:
    names = {cls.__name__ for cls in PROJECT_BLOCKS}
    assert {"AdStorage", "ResendEmail", "SlackIncomingWebhook", "GeminiImageGenerator"} <= names
    assert {"HttpAdGenerator", "LocalAdRenderer"} <= names


@pytest.mark.parametrize("block", PROJECT_BLOCKS, ids=lambda cls: cls.__name__)
class TestBlockStandards(BlockStandardTestSuite):
    @pytest.fixture
    def block(self, block: type[Block]) -> type[Block]:
        return block

    def test_has_a_valid_image(self, block: type[Block]) -> None:
        pytest.skip("no logo: the check downloads an image from the network")
