"""Scale benchmark for the unused-template claim (issue 2, item 8).

Builds, in a scratch PostgreSQL database that is dropped afterwards (even on error or SIGTERM):

- one tenant with 100,000 library templates (`tpl-000000.png` …), ~10% scoped to one of 20
  brands and ~2% inactive, so the claim's filters have something to reject;
- 10,000 products;
- 1,000,000 `product_template_usage` rows: every "typical" product has ~100 uses of random
  templates, and a few "hard" products have used the first N templates in storage-name order
  (the unused-template scan must walk past all of them before it finds one).

Then it measures, in the same run:

- the claim (`db.queries.templates.claim_unused_templates`, 3 templates, policy `recycle`) on
  random typical products, and separately on the hard products;
- the naive baseline the claim replaced: load the tenant's whole active catalog and the product's
  usage set, filter in Python, take the first 3.

Each measured claim is a real transaction: begin, claim, COMMIT (the timing includes the commit,
as a flow run pays it). The claim is then RELEASED in a second, untimed transaction
(`release_claims` deletes the never-used claim rows), so the data set is the same for every
iteration. The naive baseline only reads (it holds no claim), which flatters it slightly.

Progress goes to stderr; stdout gets one JSON object, on its last line:
`{"claim_p50_ms", "claim_p95_ms", "naive_p95_ms", "speedup", "bare_txn_p95_ms",
"claim_to_bare_p95", "target_met", ...}` (speedup = naive p95 / claim p95; the target is
`claim_p95 <= TARGET_RATIO_TO_BARE x bare_txn_p95`, a bare `SELECT 1` transaction on the same
engine timed interleaved with the claims; the extra keys give the hard case and the data set's
size).

The latencies are client-observed (SQLAlchemy + asyncpg + the project's engine settings, pool
pre-ping included), so CPU contention inflates them: the JSON records the load average at start
and end; a load above the core count makes the run unrepresentative.

Run from the repository root: `.venv/bin/python bench/selection.py` (needs PostgreSQL on
127.0.0.1:5432 with trust auth, or `AD_SCHEDULER_TEST_PG`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker  # noqa: E402

from db.migrate import upgrade  # noqa: E402
from db.models import AdTemplate, ProductTemplateUsage  # noqa: E402
from db.queries.templates import (  # noqa: E402
    claim_unused_templates,
    get_product,
    release_claims,
    unused_templates_query,
)
from db.session import new_async_engine  # noqa: E402
from tests.support.databases import scratch_pg_database  # noqa: E402

TARGET_P95_MS = 5.0
#: The target in the same run's terms (issue 15): the claim's committed transaction may cost at
#: most this many bare round trips (BEGIN; SELECT 1; COMMIT on the same engine and pool),
#: timed interleaved with the claims so both see the same load. 5 ms on a machine whose bare
#: transaction takes 2.5 ms; what a loaded machine inflates, it inflates for both.
TARGET_RATIO_TO_BARE = 2.0
CLAIM_COUNT = 3
BRANDS = 20
BRAND_SCOPED_SHARE = 0.10
INACTIVE_SHARE = 0.02
_START = time.perf_counter()


def log(message: str) -> None:
    """A progress line on stderr, with the seconds since start."""
    print(f"[{time.perf_counter() - _START:6.1f}s] {message}", file=sys.stderr, flush=True)


def template_name(index: int) -> str:
    return f"tpl-{index:06d}.png"


def percentile(samples: list[float], pct: int) -> float:
    """The `pct`-th percentile (inclusive method, linear interpolation)."""
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[pct - 1]


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def load(url: str, args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    """Fill the scratch database; returns the ids the measurements need."""
    tenant_id = uuid.uuid4()
    brand_ids = [uuid.uuid4() for _ in range(BRANDS)]
    product_ids = [uuid.uuid4() for _ in range(args.products)]
    product_brand = [rng.randrange(BRANDS) for _ in range(args.products)]
    hard_count = min(args.hard_products, args.products - 1)
    hard_ids = product_ids[:hard_count]
    typical_ids = product_ids[hard_count:]

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute("SET synchronous_commit = off; SET maintenance_work_mem = '256MB'")
        await conn.execute("SELECT setseed($1)", (args.seed % 1000) / 1000)

        await conn.execute(
            """
            INSERT INTO brands (id, tenant_id, name, colors)
            SELECT b.id, $2, 'Brand ' || b.n, '["#0f766e"]'::json
            FROM unnest($1::uuid[]) WITH ORDINALITY AS b(id, n)
            """,
            brand_ids,
            tenant_id,
        )

        t0 = time.perf_counter()
        await conn.execute(
            """
            INSERT INTO ad_templates
                (id, tenant_id, storage_name, brand_id, name, active, width, height, tags, source)
            SELECT gen_random_uuid(), $1, 'tpl-' || lpad(i::text, 6, '0') || '.png',
                   CASE WHEN random() < $3::float8
                        THEN ($2::uuid[])[1 + floor(random() * $5::int)::int] END,
                   'Template ' || i, random() >= $4::float8, 1080, 1080, '[]'::json, 'library'
            FROM generate_series(0, $6::int - 1) AS i
            """,
            tenant_id,
            brand_ids,
            BRAND_SCOPED_SHARE,
            INACTIVE_SHARE,
            BRANDS,
            args.templates,
        )
        log(f"loaded {args.templates:,} templates in {time.perf_counter() - t0:.1f}s")

        t0 = time.perf_counter()
        await conn.execute(
            """
            INSERT INTO products (id, tenant_id, brand_id, name, description, key_benefits,
                                  brand_colors, image_paths, hooks)
            SELECT p.id, $3::uuid, ($2::uuid[])[p.b + 1], 'Product ' || p.n, '', '[]'::json,
                   '[]'::json, '[]'::json, '[]'::json
            FROM unnest($1::uuid[], $4::int[]) WITH ORDINALITY AS p(id, b, n)
            """,
            product_ids,
            brand_ids,
            tenant_id,
            product_brand,
        )
        log(f"loaded {args.products:,} products in {time.perf_counter() - t0:.1f}s")

        # Usage pairs, as (product index, template index). Hard products used the first
        # `hard_prefix` templates in storage-name order; the rest is spread over typical products.
        hard_prefix = min(args.hard_prefix, args.templates - CLAIM_COUNT)
        typical_rows = args.usage - hard_count * hard_prefix
        per_product, extra = divmod(typical_rows, len(typical_ids))
        pairs: list[tuple[int, int]] = []
        for p in range(hard_count):
            pairs.extend((p, t) for t in range(hard_prefix))
        for offset in range(len(typical_ids)):
            k = per_product + (1 if offset < extra else 0)
            p = hard_count + offset
            pairs.extend((p, t) for t in rng.sample(range(args.templates), k))
        # Insert in (product_id, storage_name) order, in batches: the unique index then fills
        # its leaves left to right, which is much faster than random inserts.
        order = sorted(range(args.products), key=lambda i: product_ids[i])
        rank = {p: r for r, p in enumerate(order)}
        pairs.sort(key=lambda pt: (rank[pt[0]], pt[1]))

        t0 = time.perf_counter()
        batch = args.load_batch
        for start in range(0, len(pairs), batch):
            chunk = pairs[start : start + batch]
            await conn.execute(
                """
                INSERT INTO product_template_usage
                    (id, product_id, template_storage_name, used_at, tenant_id, use_count)
                SELECT gen_random_uuid(), p.id, 'tpl-' || lpad(u.t::text, 6, '0') || '.png',
                       now() - random() * interval '365 days', $4, 1 + floor(random() * 3)::int
                FROM unnest($1::int[], $2::int[]) WITH ORDINALITY AS u(pi, t, n)
                JOIN unnest($3::uuid[]) WITH ORDINALITY AS p(id, n) ON p.n = u.pi + 1
                ORDER BY u.n
                """,
                [p for p, _ in chunk],
                [t for _, t in chunk],
                product_ids,
                tenant_id,
            )
            done = start + len(chunk)
            rate = done / max(time.perf_counter() - t0, 1e-9)
            log(f"loaded {done:,}/{len(pairs):,} usage rows ({rate:,.0f} rows/s)")

        t0 = time.perf_counter()
        # Steady state: statistics for the planner and a visibility map for index-only scans
        # (a live table gets both from autovacuum).
        await conn.execute(
            "VACUUM (ANALYZE) brands, ad_templates, products, product_template_usage"
        )
        log(f"VACUUM ANALYZE in {time.perf_counter() - t0:.1f}s")
        # VACUUM cannot mark pages all-visible while an older snapshot is open (other sessions
        # on a shared server); without it the index-only probes fetch heap pages. Retry a bit.
        for attempt in range(6):
            pages, visible = await conn.fetchrow(
                "SELECT relpages, relallvisible FROM pg_class"
                " WHERE oid = 'product_template_usage'::regclass"
            )
            if visible >= pages or attempt == 5:
                break
            log(f"usage table: {visible:,}/{pages:,} pages all-visible; vacuuming again")
            await asyncio.sleep(1)
            await conn.execute("VACUUM product_template_usage, ad_templates")
        log(f"usage table: {visible:,}/{pages:,} pages all-visible")
        counts = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM ad_templates) AS templates,"
            " (SELECT count(*) FROM products) AS products,"
            " (SELECT count(*) FROM product_template_usage) AS usage"
        )
    finally:
        await conn.close()
    assert counts is not None
    log(
        f"data set: {counts['templates']:,} templates, {counts['products']:,} products, "
        f"{counts['usage']:,} usage rows ({hard_count} hard products used the first "
        f"{hard_prefix:,} templates)"
    )
    return {
        "tenant_id": tenant_id,
        "typical_ids": typical_ids,
        "hard_ids": hard_ids,
        "hard_prefix": hard_prefix,
        "counts": dict(counts),
    }


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------


#: Milliseconds from BEGIN to the claim's return, before COMMIT (the breakdown in the report).
BEFORE_COMMIT_MS: dict[str, list[float]] = {}


async def claim_once(
    maker: async_sessionmaker[Any], tenant_id: uuid.UUID, product_id: uuid.UUID, label: str
) -> tuple[float, list[str]]:
    """One claim in its own committed transaction (timed), then its release (untimed)."""
    flow_run_id = uuid.uuid4()
    t0 = time.perf_counter()
    async with maker() as session, session.begin():
        result = await claim_unused_templates(
            session,
            tenant_id=tenant_id,
            product_id=product_id,
            flow_run_id=flow_run_id,
            count=CLAIM_COUNT,
            when_exhausted="recycle",
        )
        before_commit = time.perf_counter() - t0
    elapsed = time.perf_counter() - t0
    BEFORE_COMMIT_MS.setdefault(label, []).append(before_commit * 1000)
    async with maker() as session, session.begin():
        released = await release_claims(session, flow_run_id=flow_run_id)
    if len(result.templates) != CLAIM_COUNT or sorted(released) != sorted(result.templates):
        raise RuntimeError(f"claim for {product_id} returned {result}, released {released}")
    return elapsed, result.templates


BARE_MS: list[float] = []


async def bare_once(maker: async_sessionmaker[Any]) -> float:
    """The floor a claim cannot go under: one committed transaction with `SELECT 1`."""
    t0 = time.perf_counter()
    async with maker() as session, session.begin():
        await session.execute(sa.text("SELECT 1"))
    return time.perf_counter() - t0


async def naive_once(
    maker: async_sessionmaker[Any], tenant_id: uuid.UUID, product_id: uuid.UUID
) -> tuple[float, list[str]]:
    """The replaced worker: whole catalog + the product's usage set, filtered in Python."""
    t0 = time.perf_counter()
    async with maker() as session, session.begin():
        product = await get_product(session, tenant_id, product_id)
        catalog = (
            await session.execute(
                sa.select(AdTemplate.storage_name, AdTemplate.brand_id)
                .where(
                    AdTemplate.tenant_id == tenant_id,
                    AdTemplate.active.is_(True),
                    AdTemplate.source == "library",
                )
                .order_by(AdTemplate.storage_name)
            )
        ).all()
        used = set(
            (
                await session.scalars(
                    sa.select(ProductTemplateUsage.template_storage_name).where(
                        ProductTemplateUsage.product_id == product_id
                    )
                )
            ).all()
        )
        picks: list[str] = []
        for name, brand_id in catalog:
            if (brand_id is None or brand_id == product.brand_id) and name not in used:
                picks.append(name)
                if len(picks) == CLAIM_COUNT:
                    break
    return time.perf_counter() - t0, picks


async def measure(
    label: str,
    fn: Callable[[uuid.UUID], Awaitable[tuple[float, list[str]]]],
    products: list[uuid.UUID],
) -> tuple[list[float], dict[uuid.UUID, list[str]]]:
    samples: list[float] = []
    picks: dict[uuid.UUID, list[str]] = {}
    step = max(1, len(products) // 5)
    for i, product_id in enumerate(products, 1):
        elapsed, picked = await fn(product_id)
        samples.append(elapsed * 1000)
        picks[product_id] = picked
        if i % step == 0 or i == len(products):
            log(f"{label}: {i}/{len(products)} (p50 so far {statistics.median(samples):.2f} ms)")
    return samples, picks


def _sql_literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


async def explain(
    engine: AsyncEngine, data: dict[str, Any], product_id: uuid.UUID, *, generic: bool = False
) -> tuple[str, float]:
    """EXPLAIN ANALYZE of the claim's unused-template scan for one product.

    `generic=True` explains the prepared statement's generic plan (the asyncpg driver prepares
    every statement, and PostgreSQL may switch a prepared statement to its generic plan).
    Returns the plan's text and its execution time in milliseconds.
    """
    async with engine.connect() as conn:
        brand_id = await conn.scalar(
            sa.text("SELECT brand_id FROM products WHERE id = :id"), {"id": product_id}
        )
        query = unused_templates_query(data["tenant_id"], product_id, brand_id, CLAIM_COUNT)
        if generic:
            compiled = query.compile(dialect=engine.dialect)
            values = ", ".join(_sql_literal(compiled.params[n]) for n in compiled.positiontup or [])
            await conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
            await conn.exec_driver_sql(f"PREPARE claim_scan AS {compiled}")
            sql = f"EXECUTE claim_scan({values})"
        else:
            sql = str(query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
        rows = await conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")
        lines = [r[0] for r in rows]
        if generic:
            await conn.exec_driver_sql("DEALLOCATE claim_scan")
            await conn.exec_driver_sql("RESET plan_cache_mode")
        await conn.rollback()
    ms = next(float(x.split()[2]) for x in lines if x.startswith("Execution Time"))
    return "\n".join(lines), ms


async def bench(url: str, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    load_start = os.getloadavg()[0]
    log(f"load average {load_start:.2f} on {os.cpu_count()} CPUs")
    data = await load(url, args, rng)
    tenant_id: uuid.UUID = data["tenant_id"]
    engine = new_async_engine(url, pool_size=2, max_overflow=0)
    maker = async_sessionmaker(engine, expire_on_commit=False)
    try:

        def claim_as(label: str) -> Callable[[uuid.UUID], Awaitable[tuple[float, list[str]]]]:
            async def claim(pid: uuid.UUID) -> tuple[float, list[str]]:
                if label == "typical":
                    BARE_MS.append(await bare_once(maker) * 1000)
                return await claim_once(maker, tenant_id, pid, label)

            return claim

        async def naive(pid: uuid.UUID) -> tuple[float, list[str]]:
            return await naive_once(maker, tenant_id, pid)

        typical: list[uuid.UUID] = data["typical_ids"]
        warm = rng.sample(typical, min(args.warmup, len(typical)))
        await measure("warm-up claim", claim_as("warm-up"), warm)
        await measure("warm-up naive", naive, warm[:3])

        claim_products = [rng.choice(typical) for _ in range(args.iterations)]
        claim_ms, claim_picks = await measure(
            "claim (typical)", claim_as("typical"), claim_products
        )

        hard_ms: list[float] = []
        if data["hard_ids"]:
            hard_products = [rng.choice(data["hard_ids"]) for _ in range(args.hard_iterations)]
            hard_ms, _ = await measure("claim (hard)", claim_as("hard"), hard_products)

        # The naive baseline runs on products the claim also served: both must pick the same.
        naive_products = claim_products[: args.naive_iterations]
        naive_ms, naive_picks = await measure("naive baseline", naive, naive_products)
        mismatched = [p for p in naive_products if naive_picks[p] != claim_picks[p]]
        if mismatched:
            p = mismatched[0]
            raise RuntimeError(
                f"claim and naive baseline disagree for {len(mismatched)} products, e.g. {p}: "
                f"claim {claim_picks[p]}, naive {naive_picks[p]}"
            )
        log(
            f"claim and naive baseline picked the same templates for {len(naive_products)} products"
        )

        plan, _ = await explain(engine, data, claim_products[0])
        log("EXPLAIN ANALYZE, unused-template scan, typical product:\n" + plan)
        plan, _ = await explain(engine, data, claim_products[0], generic=True)
        log("EXPLAIN ANALYZE, same scan, generic plan of the prepared statement:\n" + plan)
        # Server-side cost of the scan alone, over many products (no client round trips).
        scan_ms = [(await explain(engine, data, p))[1] for p in claim_products[: args.explains]]
        hard_scan_ms: list[float] = []
        if data["hard_ids"]:
            plan, _ = await explain(engine, data, data["hard_ids"][0])
            log("EXPLAIN ANALYZE, unused-template scan, hard product:\n" + plan)
            hard_scan_ms = [(await explain(engine, data, p))[1] for p in data["hard_ids"]]
    finally:
        await engine.dispose()

    claim_p95 = percentile(claim_ms, 95)
    naive_p95 = percentile(naive_ms, 95)
    bare_p95 = percentile(BARE_MS, 95)
    result: dict[str, Any] = {
        "claim_p50_ms": round(percentile(claim_ms, 50), 3),
        "claim_p95_ms": round(claim_p95, 3),
        "naive_p95_ms": round(naive_p95, 3),
        "speedup": round(naive_p95 / claim_p95, 1),
        "naive_p50_ms": round(percentile(naive_ms, 50), 3),
        "claim_max_ms": round(max(claim_ms), 3),
        # The same claims timed up to the claim's return, i.e. without the COMMIT round trip.
        "claim_before_commit_p50_ms": round(percentile(BEFORE_COMMIT_MS["typical"], 50), 3),
        "claim_before_commit_p95_ms": round(percentile(BEFORE_COMMIT_MS["typical"], 95), 3),
        # EXPLAIN ANALYZE "Execution Time" of the unused-template scan (server side only).
        "scan_exec_p95_ms": round(percentile(scan_ms, 95), 3),
        "claim_iterations": len(claim_ms),
        "naive_iterations": len(naive_ms),
        # The bare round trip on the same engine, interleaved with the claims (issue 15).
        "bare_txn_p50_ms": round(percentile(BARE_MS, 50), 3),
        "bare_txn_p95_ms": round(bare_p95, 3),
        "claim_to_bare_p95": round(claim_p95 / bare_p95, 2),
        "target_ratio_to_bare": TARGET_RATIO_TO_BARE,
        "target_met": claim_p95 <= TARGET_RATIO_TO_BARE * bare_p95,
        # The absolute figure, meaningful on a quiet machine only.
        "target_p95_ms": TARGET_P95_MS,
        "target_met_absolute": claim_p95 <= TARGET_P95_MS,
        # The box is shared: a load above its core count inflates every client-side number.
        "loadavg_1m_start": round(load_start, 2),
        "loadavg_1m_end": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
    }
    if hard_ms:
        result |= {
            "hard_claim_p50_ms": round(percentile(hard_ms, 50), 3),
            "hard_claim_p95_ms": round(percentile(hard_ms, 95), 3),
            "hard_claim_before_commit_p95_ms": round(percentile(BEFORE_COMMIT_MS["hard"], 95), 3),
            "hard_scan_exec_p95_ms": round(percentile(hard_scan_ms, 95), 3),
            "hard_prefix_used": data["hard_prefix"],
        }
    result |= {f"rows_{k}": v for k, v in data["counts"].items()}
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--templates", type=int, default=100_000)
    parser.add_argument("--products", type=int, default=10_000)
    parser.add_argument("--usage", type=int, default=1_000_000, help="total usage rows")
    parser.add_argument(
        "--hard-products",
        type=int,
        default=10,
        help="products that used the first --hard-prefix templates",
    )
    parser.add_argument("--hard-prefix", type=int, default=1_000)
    parser.add_argument("--iterations", type=int, default=300, help="measured claims")
    parser.add_argument("--hard-iterations", type=int, default=100)
    parser.add_argument("--naive-iterations", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--explains", type=int, default=50, help="EXPLAIN ANALYZE samples")
    parser.add_argument("--load-batch", type=int, default=250_000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    args.naive_iterations = min(args.naive_iterations, args.iterations)
    return args


def _terminate(signum: int, _frame: object) -> None:
    # Turn SIGTERM into SystemExit so the scratch database is dropped on the way out.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    with scratch_pg_database("adsched_bench") as url:
        log(f"scratch database {make_url(url).database}; applying migrations")
        upgrade(url)
        log("schema at head")
        result = asyncio.run(bench(url, args))
        log("dropping the scratch database")
    log(
        f"claim p50 {result['claim_p50_ms']} ms, p95 {result['claim_p95_ms']} ms "
        f"= {result['claim_to_bare_p95']} bare round trips (target <= {TARGET_RATIO_TO_BARE}: "
        f"{'met' if result['target_met'] else 'MISSED'}; {TARGET_P95_MS} ms quiet); "
        f"naive p95 {result['naive_p95_ms']} ms; speedup x{result['speedup']}"
    )
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
