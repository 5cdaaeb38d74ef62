"""Benchmark: pruning a year of history for 100 jobs takes bounded time and memory.

Writes, on a scratch PostgreSQL database, `--jobs` (100) daily jobs with `--days` (365) days of
history: one run a day each (90 % completed, 7 % failed, 3 % skipped as misfires), `--ad-runs`
(3) ad runs per run with `--variations` (1) generated ads each — a real small file per ad in
local storage — and a sent email delivery per ad run; each product's template usage points at
its latest ad runs. Then a separate process runs one retention pass (`flows.retention.
prune_database`, the flow's own code, without Prefect's artifact step) with the default 180-day
cutoff and batch size, and reports its wall time and memory: peak RSS, and the growth over the
process's RSS once everything is imported (what pruning itself held).

Last stdout line: {"rows_before", "rows_deleted", "files_deleted", "prune_s", "rows_per_s",
"peak_rss_mb", "rss_growth_mb", "batches", "loadavg"}.

    .venv/bin/python bench/retention.py [--jobs 100] [--days 365] [--ad-runs 3] [--variations 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CHUNK = 5000


def log(message: str) -> None:
    """Progress to stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def _insert(table: Any, rows: list[dict[str, Any]]) -> None:
    from db.session import session_scope

    for start in range(0, len(rows), CHUNK):
        async with session_scope() as session:
            await session.execute(table.insert(), rows[start : start + CHUNK])


async def generate(args: argparse.Namespace, storage_root: Path) -> int:
    """Write the history; returns the number of rows written."""
    from db.models import (
        AdRun,
        ExportDelivery,
        GeneratedAd,
        ProductTemplateUsage,
        ScheduledJobRun,
    )
    from db.session import session_scope
    from tests.support.factories import make_job, make_product

    rng = random.Random(15)
    now = datetime.now(UTC)
    tenant = uuid.uuid4()
    async with session_scope() as session:
        jobs = []
        for i in range(args.jobs):
            product = await make_product(session, tenant, name=f"Product {i}")
            jobs.append(await make_job(session, tenant, product, name=f"daily-{i}"))
    total = 0
    for job in jobs:
        runs, ad_runs, ads, deliveries, usage = [], [], [], [], {}
        for day in range(args.days, 0, -1):
            at = now - timedelta(days=day)
            roll = rng.random()
            status = "completed" if roll < 0.9 else "failed" if roll < 0.97 else "skipped"
            run_id, flow_run_id = uuid.uuid4(), uuid.uuid4()
            runs.append(
                {
                    "id": run_id,
                    "scheduled_job_id": job.id,
                    "tenant_id": tenant,
                    "flow_run_id": flow_run_id,
                    "scheduled_for": at,
                    "started_at": None if status == "skipped" else at,
                    "completed_at": at + timedelta(minutes=1),
                    "status": status,
                    "trigger": "schedule",
                    "skip_reason": "misfire" if status == "skipped" else None,
                    "created_at": at,
                }
            )
            if status == "skipped":
                continue
            for k in range(args.ad_runs):
                ad_run_id = uuid.uuid4()
                template = f"tpl-{(day * args.ad_runs + k) % 40:02d}.png"
                ad_runs.append(
                    {
                        "id": ad_run_id,
                        "tenant_id": tenant,
                        "product_id": job.product_id,
                        "template_storage_name": template,
                        "scheduled_job_id": job.id,
                        "scheduled_job_run_id": run_id,
                        "flow_run_id": flow_run_id,
                        "status": status,
                        "parameters": {},
                        "started_at": at,
                        "completed_at": at + timedelta(seconds=30),
                        "created_at": at,
                    }
                )
                usage[template] = (ad_run_id, at)
                if status == "completed":
                    deliveries.append(
                        {
                            "id": uuid.uuid4(),
                            "tenant_id": tenant,
                            "ad_run_id": ad_run_id,
                            "channel": "email",
                            "status": "sent",
                            "attempts": 1,
                            "created_at": at,
                        }
                    )
                    for v in range(args.variations):
                        path = f"ads/{tenant}/{ad_run_id}/variation-{v + 1}.png"
                        file = storage_root / path
                        file.parent.mkdir(parents=True, exist_ok=True)
                        file.write_bytes(b"\x89PNG bench ad")
                        ads.append(
                            {
                                "id": uuid.uuid4(),
                                "tenant_id": tenant,
                                "ad_run_id": ad_run_id,
                                "variation_index": v,
                                "storage_path": path,
                                "headline": "Headline",
                                "width": 1080,
                                "height": 1080,
                                "size_bytes": 13,
                                "created_at": at,
                            }
                        )
        uses = [
            {
                "product_id": job.product_id,
                "template_storage_name": template,
                "used_at": at,
                "ad_run_id": ad_run_id,
                "tenant_id": tenant,
            }
            for template, (ad_run_id, at) in usage.items()
        ]
        await _insert(ScheduledJobRun.__table__, runs)
        await _insert(AdRun.__table__, ad_runs)
        await _insert(GeneratedAd.__table__, ads)
        await _insert(ExportDelivery.__table__, deliveries)
        await _insert(ProductTemplateUsage.__table__, uses)
        total += len(runs) + len(ad_runs) + len(ads) + len(deliveries) + len(uses)
    return total


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _prune() -> dict[str, Any]:
    from blocks.storage import default_storage
    from config import get_settings
    from db.session import dispose_engines, session_scope
    from db.types import utcnow
    from flows.retention import DEFAULT_BATCH_SIZE, prune_database

    async with session_scope() as session:
        await session.connection()  # connect (and import the driver) before the baseline
    baseline = _rss_mb()
    cutoff = utcnow() - timedelta(days=get_settings().retention_days)
    started = time.perf_counter()
    report = await prune_database(cutoff, default_storage(), batch_size=DEFAULT_BATCH_SIZE)
    elapsed = time.perf_counter() - started
    await dispose_engines()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "report": report.model_dump(mode="json"),
        "prune_s": round(elapsed, 2),
        "baseline_rss_mb": round(baseline, 1),
        "peak_rss_mb": round(peak, 1),
    }


def main() -> None:
    """Generate, prune in a child process, print the result line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--ad-runs", type=int, default=3)
    parser.add_argument("--variations", type=int, default=1)
    parser.add_argument("--prune-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prune_only:
        print(json.dumps(asyncio.run(_prune())))
        return

    from config import get_settings
    from db.migrate import upgrade
    from db.session import dispose_engines
    from tests.support.databases import scratch_pg_database

    with (
        tempfile.TemporaryDirectory(prefix="retention-bench-") as data_dir,
        scratch_pg_database("adsched_retention_bench") as app_db,
    ):
        os.environ.update(AD_SCHEDULER_DATA_DIR=data_dir, DATABASE_URL=app_db)
        get_settings.cache_clear()
        upgrade(app_db)
        storage_root = Path(data_dir) / "storage"
        log(f"writing {args.days} days of history for {args.jobs} jobs")
        started = time.perf_counter()

        async def write() -> int:
            try:
                return await generate(args, storage_root)
            finally:
                await dispose_engines()

        rows = asyncio.run(write())
        log(f"{rows} rows written in {time.perf_counter() - started:.1f}s; pruning")
        child = subprocess.run(
            [sys.executable, __file__, "--prune-only"],
            capture_output=True,
            text=True,
            check=False,
            env=dict(os.environ),
        )
        if child.returncode != 0:
            raise SystemExit(f"prune failed:\n{child.stderr[-3000:]}")
        pruned = json.loads(child.stdout.strip().splitlines()[-1])
        # Printed before the scratch folder is removed (that takes minutes for ~100,000
        # folders); nothing else goes to stdout.
        _print_result(rows, pruned)
        log("removing the scratch database and folder")


def _print_result(rows: int, pruned: dict[str, Any]) -> None:
    report = pruned["report"]
    deleted = (
        report["ad_runs"] + report["generated_ads"] + report["deliveries"] + report["job_runs"]
    )
    print(
        json.dumps(
            {
                "rows_before": rows,
                "rows_deleted": deleted,
                "files_deleted": report["files"],
                "prune_s": pruned["prune_s"],
                "rows_per_s": round(deleted / pruned["prune_s"], 1) if pruned["prune_s"] else None,
                "peak_rss_mb": pruned["peak_rss_mb"],
                "rss_growth_mb": round(pruned["peak_rss_mb"] - pruned["baseline_rss_mb"], 1),
                "batches": report["batches"],
                "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
