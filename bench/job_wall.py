"""Benchmark: wall time of one scheduled-job run through the real flow on a local server.

1. 24 templates, a generator of fixed 0.5 s latency, 8 templates at a time, under a shared
   provider limit of 8 (a Prefect global concurrency limit): compare the flow run's own wall time
   (start to end as Prefect records it, process start-up excluded) with the ideal
   ceil(24/8) x 0.5 s = 1.5 s and with the sequential design it replaces (24 x 0.5 s = 12 s).
2. 200 templates with an instant generator: orchestration overhead in ms per template.

Runs its own Prefect server and application database on scratch PostgreSQL databases.
`--repeat N` (default 1) runs each measured job N times and reports the medians (the machine is
shared: one run is one sample). The load average before and after is in the result.
Last stdout line: {"wall_s", "ratio_to_ideal", "ratio_to_sequential", "overhead_ms_per_template",
"walls_s", "loadavg", "cpu_ref_s" (`bench.machine.cpu_reference_s`)}.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import os
import statistics
import sys
import tempfile
import uuid
from pathlib import Path
from typing import ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image  # noqa: E402

from bench.machine import cpu_reference_s, loadavg  # noqa: E402
from blocks.generators.base import AdGenerator, AdImage, AdRequest  # noqa: E402

LATENCY_S = 0.5
TEMPLATES = 24
CONCURRENCY = 8
OVERHEAD_TEMPLATES = 200


def _tiny_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "#0f766e").save(out, format="PNG")
    return out.getvalue()


class FixedLatencyGenerator(AdGenerator):
    """A provider stand-in: answers after a fixed latency with a tiny PNG."""

    _block_type_name = "Bench Fixed Latency Generator"
    _block_type_slug = "bench-fixed-latency"
    _png: ClassVar[bytes] = _tiny_png()

    latency_seconds: float = 0.5

    async def generate(self, request: AdRequest) -> AdImage:
        if self.latency_seconds:
            await asyncio.sleep(self.latency_seconds)
        return AdImage(data=self._png, width=8, height=8, headline=request.product.name)


async def _run_job(templates: int, latency: float, label: str) -> float:
    from prefect.client.orchestration import get_client

    from blocks.storage import default_storage
    from db.session import session_scope
    from domain.params import AdParameters, JobParameters
    from flows.limits import ensure_provider_limit
    from flows.sample_data import seed_sample_data
    from flows.scheduled_job import run_scheduled_job
    from tests.support.factories import make_job

    tenant = uuid.uuid4()
    block = f"bench-{label}-{tenant.hex[:6]}"
    generator = FixedLatencyGenerator(
        latency_seconds=latency, provider_limit=f"bench-provider-{label}", max_in_flight=CONCURRENCY
    )
    await generator.asave(block)
    # The provider's limit exists, as it does for every run after a provider's first (which
    # creates it: ~0.35 s here, paid once per provider, not per run; `bench/e2e.py` does the same).
    await ensure_provider_limit(generator)
    print(f"[{label}] seeding {templates} templates", file=sys.stderr)
    _brand, product, _ = await seed_sample_data(tenant, default_storage(), templates=templates)
    params = JobParameters(
        ad=AdParameters(variations=1, generator_block=f"bench-fixed-latency/{block}"),
        template_concurrency=CONCURRENCY,
    )
    async with session_scope() as session:
        job = await make_job(
            session,
            tenant,
            product,
            template_count=templates,
            parameters=params.model_dump(mode="json"),
        )
    print(f"[{label}] running the flow", file=sys.stderr)
    state = await run_scheduled_job(job.id, return_state=True)  # type: ignore[call-overload]
    if not state.is_completed():
        raise SystemExit(f"[{label}] run did not complete: {state.message}")
    async with get_client() as client:
        run = await client.read_flow_run(state.state_details.flow_run_id)
    assert run.start_time and run.end_time
    wall = (run.end_time - run.start_time).total_seconds()
    print(f"[{label}] flow run wall time {wall:.3f} s", file=sys.stderr)
    return wall


async def _bench(repeat: int) -> dict[str, object]:
    # A fresh server pays one-time costs on its first requests (connections, first queries of
    # each route); a production server is warm. One small run warms it up, unmeasured.
    await _run_job(2, 0.0, "warm-up")
    walls = [await _run_job(TEMPLATES, LATENCY_S, f"latency{i}") for i in range(repeat)]
    wall = statistics.median(walls)
    ideal = math.ceil(TEMPLATES / CONCURRENCY) * LATENCY_S
    sequential = TEMPLATES * LATENCY_S
    overhead_wall = statistics.median(
        [await _run_job(OVERHEAD_TEMPLATES, 0.0, f"instant{i}") for i in range(repeat)]
    )
    return {
        "wall_s": round(wall, 3),
        "ratio_to_ideal": round(wall / ideal, 3),
        "ratio_to_sequential": round(wall / sequential, 3),
        "overhead_ms_per_template": round(overhead_wall * 1000 / OVERHEAD_TEMPLATES, 2),
        "walls_s": [round(w, 3) for w in walls],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs of each measured job")
    args = parser.parse_args()
    from db.migrate import upgrade
    from tests.support.databases import scratch_pg_database
    from tests.support.prefect_server import running_prefect_server

    with (
        tempfile.TemporaryDirectory(prefix="job-wall-") as data_dir,
        scratch_pg_database("adsched_bench_app") as app_db,
    ):
        os.environ["AD_SCHEDULER_DATA_DIR"] = data_dir
        os.environ["DATABASE_URL"] = app_db
        print("migrating the app database; starting a Prefect server", file=sys.stderr)
        upgrade(app_db)
        with running_prefect_server() as api_url:
            os.environ["PREFECT_API_URL"] = api_url
            from prefect.settings import PREFECT_API_URL, temporary_settings

            with temporary_settings(updates={PREFECT_API_URL: api_url}):
                load_before = loadavg()
                result = asyncio.run(_bench(max(args.repeat, 1)))
                result["loadavg"] = f"{load_before} -> {loadavg()}"
                result["cpu_ref_s"] = cpu_reference_s()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
