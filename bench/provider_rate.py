"""Benchmark: three jobs firing together share one provider rate limit without a single 429.

What runs:

* a fake Gemini `generateContent` endpoint on 127.0.0.1 that allows R requests per second (a
  token bucket holding one second's worth, R tokens, refilled at R/s) and answers 429
  `RESOURCE_EXHAUSTED` (with `retryDelay: 1s`) beyond it; every answer takes 0.2 s;
* its own Prefect server on a scratch PostgreSQL database (`running_prefect_server()`);
* one saved `GeminiImageGenerator` block pointing at the fake, with `max_in_flight` and
  `requests_per_minute = 60·R`, and its provider limits created by `ensure_provider_limit`;
* three jobs as three **separate processes** (`tests/generators/limit_worker.py`), each one
  Prefect flow run that loads the block by name and generates 10 templates × V variations at
  once, every call inside a slot of the run's `flows.limits.ProviderSlots(generator)` (the
  one limit mechanism generators and exports share) and retried by `generate_with_retries`.
  The processes start, report ready, and are released together.

Measured at the fake provider: `achieved_rps` = accepted requests ÷ (last accepted arrival −
first arrival + 1/R), i.e. the rate a perfectly paced client at exactly R would score as R;
`ratio` = achieved_rps ÷ R; `http_429` = requests refused. Targets: ratio ≥ 0.95, http_429 = 0.

    .venv/bin/python bench/provider_rate.py [--rps 10] [--variations 3] [--max-in-flight 4]

Progress goes to stdout; the last line is one JSON object
`{"achieved_rps", "limit_rps", "ratio", "http_429"}`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pydantic import SecretStr  # noqa: E402

from blocks.generators.gemini import GeminiImageGenerator  # noqa: E402
from tests.support.http_fake import (  # noqa: E402
    GEMINI_KEY,
    FakeServer,
    Reply,
    Seen,
    gemini_error,
    gemini_image_reply,
    png_bytes,
    running,
)
from tests.support.prefect_server import running_prefect_server  # noqa: E402

LATENCY_S = 0.2
JOBS = 3
TEMPLATES_PER_JOB = 10


class RateLimitedProvider:
    """The fake provider's policy: a token bucket of R tokens refilled at R per second."""

    def __init__(self, rps: float) -> None:
        self.rps = rps
        self.tokens = rps
        self.stamp = time.monotonic()
        self.accepted: list[float] = []
        self.refused = 0
        self.lock = threading.Lock()
        self.image = png_bytes(64, 64)

    def __call__(self, seen: Seen) -> Reply:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.rps, self.tokens + (now - self.stamp) * self.rps)
            self.stamp = now
            if self.tokens < 1:
                self.refused += 1
                return gemini_error(
                    429,
                    "RESOURCE_EXHAUSTED",
                    "Quota exceeded for requests per second",
                    [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}],
                )
            self.tokens -= 1
            self.accepted.append(now)
        return gemini_image_reply(self.image)

    def summary(self) -> dict[str, Any]:
        """The benchmark's result line."""
        with self.lock:
            accepted = sorted(self.accepted)
            refused = self.refused
        span = (accepted[-1] - accepted[0] + 1 / self.rps) if accepted else float("inf")
        achieved = len(accepted) / span
        return {
            "achieved_rps": round(achieved, 3),
            "limit_rps": self.rps,
            "ratio": round(achieved / self.rps, 3),
            "http_429": refused,
        }


async def run_jobs(
    block: str,
    args: argparse.Namespace,
    homes: Path,
    provider: RateLimitedProvider,
    expected: int,
) -> float:
    """Start the three job processes, release them together, wait; returns seconds taken."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    workers = []
    for job in range(JOBS):
        workers.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.generators.limit_worker",
                "--block",
                block,
                "--job",
                f"job-{job + 1}",
                "--templates",
                str(TEMPLATES_PER_JOB),
                "--variations",
                str(args.variations),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=ROOT,
                env={**env, "PREFECT_HOME": str(homes / f"job-{job + 1}")},
            )
        )
    try:
        for worker in workers:
            assert worker.stdout is not None
            line = await asyncio.wait_for(worker.stdout.readline(), 120)
            if line.strip() != b"ready":
                raise RuntimeError(f"worker did not start: {line!r}")
        print(f"{JOBS} job processes ready; firing them together", flush=True)
        started = time.monotonic()
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write(b"go\n")
            await worker.stdin.drain()
        done = asyncio.gather(*(w.communicate() for w in workers))
        while True:
            try:
                outputs = await asyncio.wait_for(asyncio.shield(done), 2)
                break
            except TimeoutError:
                print(
                    f"  {time.monotonic() - started:5.1f}s: {len(provider.accepted)}/{expected} "
                    f"accepted, {provider.refused} refused (429)",
                    flush=True,
                )
        elapsed = time.monotonic() - started
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
    for worker, (stdout, stderr) in zip(workers, outputs, strict=True):
        if worker.returncode != 0:
            raise RuntimeError(f"job process failed:\n{stderr.decode()[-3000:]}")
        print(f"  job process: {stdout.decode().strip()}", flush=True)
    return elapsed


async def bench(args: argparse.Namespace, provider: RateLimitedProvider, fake: FakeServer) -> None:
    """Save the block, create its limits, run the jobs."""
    from flows.limits import ensure_provider_limit

    name = f"bench-gemini-{uuid.uuid4().hex[:8]}"
    generator = GeminiImageGenerator(
        api_key=SecretStr(GEMINI_KEY),
        base_url=f"{fake.url}/v1beta",
        provider_limit=name,
        max_in_flight=args.max_in_flight,
        requests_per_minute=int(args.rps * 60),
    )
    await generator.save(name)
    await ensure_provider_limit(generator)
    expected = JOBS * TEMPLATES_PER_JOB * args.variations
    print(
        f"generator block {name!r}: max_in_flight={args.max_in_flight}, "
        f"requests_per_minute={generator.requests_per_minute}; "
        f"{expected} requests to make",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-homes-") as homes:
        elapsed = await run_jobs(name, args, Path(homes), provider, expected)
    print(
        f"all jobs finished in {elapsed:.1f}s wall (process start-up excluded); "
        f"{len(provider.accepted)} accepted, {provider.refused} refused, "
        f"peak in flight at the provider {fake.peak_in_flight}",
        flush=True,
    )


def main() -> None:
    """Run the benchmark and print the result line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rps", type=float, default=10.0, help="provider limit R (req/s)")
    parser.add_argument("--variations", type=int, default=3, help="variations per template")
    parser.add_argument("--max-in-flight", type=int, default=4, help="block max_in_flight")
    args = parser.parse_args()

    provider = RateLimitedProvider(args.rps)
    print("starting a Prefect server on a scratch PostgreSQL database…", flush=True)
    with running_prefect_server() as api_url:
        os.environ["PREFECT_API_URL"] = api_url
        from prefect.settings import PREFECT_API_URL, temporary_settings

        print(f"Prefect server up at {api_url}", flush=True)
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            fake = FakeServer(provider)
            fake.latency_s = LATENCY_S
            with running(fake):
                print(
                    f"fake provider at {fake.url}: {args.rps:g} req/s, {LATENCY_S}s latency",
                    flush=True,
                )
                asyncio.run(bench(args, provider, fake))
        print("stopping the Prefect server", flush=True)
    print(json.dumps(provider.summary()), flush=True)


if __name__ == "__main__":
    main()
