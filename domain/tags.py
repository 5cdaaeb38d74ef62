"""Tags a job's deployment carries for its runs to read (Prefect copies them to each flow run).

`generator:<block>` names the job's generator block, so a run can start loading it while it
reads its job (the job's own parameters stay the authority: a run whose job names another
block loads that one). Block names are not secrets (`domain.params.BLOCK_NAME_PATTERN`).
"""

from __future__ import annotations

from collections.abc import Iterable

GENERATOR_TAG_PREFIX = "generator:"


def generator_tag(block: str) -> str:
    """The tag naming a job's generator block ("generator:gemini-image-generator/main")."""
    return f"{GENERATOR_TAG_PREFIX}{block}"


def generator_from_tags(tags: Iterable[str]) -> str | None:
    """The generator block a run's tags name, or None (no tag, or more than one)."""
    prefix = GENERATOR_TAG_PREFIX
    named = {tag.removeprefix(prefix) for tag in tags if tag.startswith(prefix)}
    return named.pop() if len(named) == 1 and "" not in named else None
