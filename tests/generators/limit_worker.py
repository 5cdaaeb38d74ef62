"""A generation run in its own process, drawing from a shared provider limit.

Used by `test_provider_limit.py` (two of these against one fake provider) and by
`bench/provider_rate.py`. It loads the saved generator block by name from the Prefect server
(PREFECT_API_URL), prints `ready`, waits for a line on stdin (so every process fires at the same
moment), then runs one Prefect flow that generates `templates × variations` ads concurrently,
each call inside a slot of the run's `ProviderSlots(generator)` (as the pipeline does), and
prints `done <ok> <failed>`.

Like a real flow, a run bounds its own concurrency (`--local-limit`, default the block's
`max_in_flight`): more local waiters than the provider limit can admit would only poll the
Prefect server harder without getting a request out sooner. One Prefect client per run is
reused for every slot.

    python -m tests.generators.limit_worker --block NAME --block-type gemini --job job-1 \
        --templates 10 --variations 3
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import cast

from prefect import flow
from prefect.client.orchestration import get_client

from blocks.generators.base import AdGenerator, AdRequest, GenerationError
from blocks.generators.gemini import GeminiImageGenerator
from blocks.generators.http_service import HttpAdGenerator
from blocks.generators.retrying import generate_with_retries
from domain.params import AdParameters
from flows.limits import ProviderSlots
from tests.generators.conftest import PRODUCT, PRODUCT_PNG, TEMPLATE_PNG

BLOCK_TYPES: dict[str, type[AdGenerator]] = {
    "gemini": GeminiImageGenerator,
    "http": HttpAdGenerator,
}


@flow(name="provider-limit-worker")
async def generate_job(
    *,
    block_type: str,
    block_name: str,
    job: str,
    templates: int,
    variations: int,
    local_limit: int | None = None,
) -> tuple[int, int]:
    """Generate every variation of every template at once, all under the provider limit."""
    # `aload` is wrapped by prefect's `inject_client`, which hides its `Self` return type.
    generator = cast(AdGenerator, await BLOCK_TYPES[block_type].aload(block_name))
    parameters = AdParameters(variations=variations, color_mode="brand")
    requests = [
        AdRequest(
            product=PRODUCT,
            template_name=f"{job}/template-{t:02d}.png",
            template_image=TEMPLATE_PNG,
            product_image=PRODUCT_PNG,
            variation_index=v,
            parameters=parameters,
        )
        for t in range(templates)
        for v in range(variations)
    ]
    local = asyncio.Semaphore(local_limit or generator.max_in_flight)
    async with (
        get_client() as client,
        ProviderSlots(generator, client, requests=len(requests)) as slots,
    ):

        async def one(request: AdRequest) -> object:
            async with local:
                try:
                    return await generate_with_retries(generator, request, slot=slots.slot)
                finally:
                    slots.done()

        results = await asyncio.gather(*(one(r) for r in requests), return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    for error in failed[:3]:
        print(f"error {type(error).__name__}: {error}", file=sys.stderr, flush=True)
    unexpected = [r for r in failed if not isinstance(r, GenerationError)]
    if unexpected:
        raise unexpected[0]
    return len(results) - len(failed), len(failed)


def main() -> None:
    """Parse arguments, wait for the go line, run the flow."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--block", required=True)
    parser.add_argument("--block-type", choices=sorted(BLOCK_TYPES), default="gemini")
    parser.add_argument("--job", default="job")
    parser.add_argument("--templates", type=int, default=5)
    parser.add_argument("--variations", type=int, default=1)
    parser.add_argument("--local-limit", type=int, default=None)
    args = parser.parse_args()
    print("ready", flush=True)
    sys.stdin.readline()
    ok, failed = asyncio.run(
        generate_job(
            block_type=args.block_type,
            block_name=args.block,
            job=args.job,
            templates=args.templates,
            variations=args.variations,
            local_limit=args.local_limit,
        )
    )
    print(f"done {ok} {failed}", flush=True)


if __name__ == "__main__":
    main()
