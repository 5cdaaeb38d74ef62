"""Benchmark: from the scheduled time to the run's end, for one job and for a burst of jobs.

What runs, per Prefect backend (`--prefect-db sqlite|postgres|both`):

* a Prefect server (`scheduler.local_prefect.local_prefect_server`) on SQLite (the embedded
  default) or on a scratch PostgreSQL database, and the app database on scratch PostgreSQL;
* one process worker as `ad-scheduler up` starts it (`process_worker`: `TUNED_WORKER_ENV`,
  `--limit` flow runs at once, beside a fork server; `--no-forkserver`: without) on a pool made
  as ours are (`process_base_job_template`: our command, which forks each run's engine from the
  fork server, or is `python -m prefect.engine` itself without one; `--no-engine-command`:
  Prefect's default, a workspace supervisor then the engine), whose peak RSS, and the peak RSS
  and PSS of its flow-run processes, are sampled from /proc;
* a fake Gemini `generateContent` endpoint on 127.0.0.1 answering every request after a fixed
  0.5 s (`tests.support.http_fake`), behind a saved `GeminiImageGenerator` block;
* jobs registered through the SDK (`scheduler.sdk.AdScheduler`) as one-time jobs whose slot is
  the worker's prefetch + 3 s ahead (`E2E_LEAD_S` overrides), as a cron run is created long
  before its slot (a cron slot would cost up to a minute of waiting per firing; the run path
  from the scheduled flow run on is the same), and a bare Prefect flow deployment (one trivial
  task, `bare_flow` below) on the same pool, run the same way (a flow run scheduled ahead).

(a) `--firings` (5) firings of a job of 3 templates x 1 variation (ideal generation 0.5 s: the
    templates run at once), alternating with firings of the bare flow. Per firing: scheduled
    time -> run end and scheduled time -> Running (schedule lag), as Prefect records them.
    `ratio_p50` = ours p50 / (bare p50 + 0.5 s); `run_ratio_p50` the same on the runs' own
    durations (Running -> end), which the start's whole-second rounding does not move.
(b) a burst of `--burst` (100) jobs of 1 template, all due at the same second (`--burst-kind`:
    daily cron jobs sharing a cron minute, as on a Monday 09:00, or one-time jobs, whose runs
    also complete their job and pause its deployment), then the same
    number of bare deployments due together: every job must run exactly once (one flow run, one
    `scheduled_job_runs` row, completed, nothing skipped as a misfire with the default grace);
    time from the slot to the last run's end, runs per minute, ratio to the bare burst.
    `--rounds N` runs N such pairs, alternating which side goes first (a round's jobs are
    deleted after it), and reports the medians (`burst_summary`): a single pair's ratio moves
    by ±0.1 on this shared machine.

The machine is shared: the load average before and after is in the result, and the CPU's speed
(`cpu_ref_s`, `bench.machine.cpu_reference_s`: compare seconds only between runs of a similar
one); figures measured under load are provisional. Last stdout line: one JSON object (per
backend, and the ratios).

    .venv/bin/python bench/e2e.py [--prefect-db both] [--quick] [--firings 5] [--burst 100]
        [--rounds 1] [--limit 8] [--no-forkserver] [--no-engine-command] [--logs DIR]

`--firings 0` skips (a); `--burst 0` skips (b). CPU per run is the reaped children of the worker
and of the fork server (user + system), so it counts the command, supervisor and engine alike.
The bare flow runs on the same worker and pool as ours: with the fork server both are forked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import flow, task

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.machine import cpu_reference_s, loadavg  # noqa: E402

LATENCY_S = 0.5
TEMPLATES_PER_JOB = 3
#: Seconds between registering a run and its slot: longer than the worker's prefetch, as a cron
#: run's is (Prefect creates those long ahead), so the worker can start the process early.
LEAD_S = float(os.environ.get("E2E_LEAD_S", "0")) or None
#: How long one run may take to reach a final state; a burst of N gets N x BURST_S_PER_RUN more
#: (on a loaded 2-core machine a burst of 100 takes well over 10 minutes).
RUN_TIMEOUT_S = 600.0
BURST_S_PER_RUN = 20.0
POOL = "e2e-process"
BARE_ENTRYPOINT = "bench/e2e.py:bare_flow"
#: Log each firing's task runs (E2E_TIMELINE=1): where a run's time goes, as Prefect saw it.
TIMELINE = os.environ.get("E2E_TIMELINE") == "1"


@task
def _bare_task() -> int:
    return 1


@flow(name="e2e-bare-flow")
def bare_flow() -> int:
    """The baseline: a Prefect flow with one trivial task."""
    return _bare_task()


def prefetch_lead_s() -> float:
    """The tuned worker's prefetch plus 3 s: a run due this far ahead is not started yet."""
    from scheduler.local_prefect import TUNED_WORKER_ENV

    return float(TUNED_WORKER_ENV.get("PREFECT_WORKER_PREFETCH_SECONDS", "10")) + 3


def lead_s() -> float:
    """`E2E_LEAD_S`, else `prefetch_lead_s()`."""
    return LEAD_S or prefetch_lead_s()


def log(message: str) -> None:
    """Progress to stderr (stdout ends with the result line)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- peak RSS from /proc ---------------------------------------------------------------------


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _children_of(root: int) -> list[int]:
    """Every live descendant of `root` (by parent pid)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: split after it.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _pss_kb(pid: int) -> int:
    """Proportional set size: private pages, plus shared ones divided among their sharers."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class RssSampler:
    """Samples the worker's and its flow-run processes' peak RSS (VmHWM) every 0.25 s.

    A flow run on a Prefect 3.9 process worker is two processes by default (a workspace
    supervisor that runs the pull steps, then `prefect.engine`); both are descendants. With a
    fork server, the worker's child is the pool's command (the fork server's client) and the
    run's process a child of the fork server: descendants of both are counted. A forked
    child's RSS counts the pages it shares with the server: the PSS total is what they cost.
    """

    def __init__(self, worker_pid: int, forkserver_pid: int | None = None) -> None:
        self.worker_pid = worker_pid
        self.forkserver_pid = forkserver_pid
        self.phase = "idle"
        self.worker_kb = 0
        self.forkserver_kb = 0
        self.flow_run_kb: dict[str, int] = {}
        self.peak_flow_runs: dict[str, int] = {}
        self.total_kb: dict[str, int] = {}
        self.total_pss_kb: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @property
    def roots(self) -> list[int]:
        """The worker, and the fork server if any."""
        return [self.worker_pid] + ([self.forkserver_pid] if self.forkserver_pid else [])

    def flow_run_pids(self) -> list[int]:
        """Every live flow-run process (and pool command)."""
        return [pid for root in self.roots for pid in _children_of(root)]

    def children_cpu_s(self) -> float:
        """CPU seconds (user + system) of the finished flow-run processes so far (the worker's
        children and the fork server's)."""
        total = 0
        for root in self.roots:
            fields = Path(f"/proc/{root}/stat").read_text().rsplit(")", 1)[1].split()
            # cutime and cstime: fields 16 and 17 of stat(5), in clock ticks.
            total += int(fields[13]) + int(fields[14])
        return total / os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.wait(0.25):
            self.worker_kb = max(self.worker_kb, _status_kb(self.worker_pid, "VmHWM"))
            if self.forkserver_pid:
                self.forkserver_kb = max(
                    self.forkserver_kb, _status_kb(self.forkserver_pid, "VmHWM")
                )
            children = self.flow_run_pids()
            phase = self.phase
            # With a fork server a run is two processes (its command, its engine): count engines.
            engines = (
                len(_children_of(self.forkserver_pid)) if self.forkserver_pid else len(children)
            )
            self.peak_flow_runs[phase] = max(self.peak_flow_runs.get(phase, 0), engines)
            total = pss = 0
            for pid in children:
                total += _status_kb(pid, "VmRSS")
                pss += _pss_kb(pid)
                self.flow_run_kb[phase] = max(
                    self.flow_run_kb.get(phase, 0), _status_kb(pid, "VmHWM")
                )
            self.total_kb[phase] = max(self.total_kb.get(phase, 0), total)
            self.total_pss_kb[phase] = max(self.total_pss_kb.get(phase, 0), pss)


# --- measuring -------------------------------------------------------------------------------


@dataclass
class Timing:
    """One flow run as Prefect recorded it, relative to its scheduled time (seconds)."""

    lag_s: float
    end_s: float
    state: str
    #: Running -> end: the run's own duration, free of where in its second Prefect let it start.
    run_s: float = 0.0


@dataclass
class Env:
    """What the measuring coroutines share."""

    tenant: uuid.UUID
    product_id: uuid.UUID
    generator_block: str
    bare_flow_id: uuid.UUID | None = None
    #: The Prefect server's process id (its CPU is measured per burst).
    server_pid: int | None = None
    bare_deployments: list[uuid.UUID] = field(default_factory=list)
    #: Bursts begun so far (names the round's jobs and deployments).
    rounds: int = 0
    #: The burst's jobs are daily cron jobs (else one-time jobs): `--burst-kind`.
    cron_burst: bool = True


def _pct(values: list[float], q: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_s": round(statistics.median(values), 3),
        "p95_s": round(_pct(values, 95), 3),
        "max_s": round(max(values), 3),
    }


async def _wait_final(
    deployment_ids: list[uuid.UUID], label: str, *, until: datetime | None = None
) -> dict[uuid.UUID, list[Any]]:
    """Poll until every deployment has a final flow run; returns each deployment's runs (only
    those expected to start by `until` when given: a cron schedule has the next days' too)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
    )

    # Read by the API, not here: a cron deployment has its next days' runs, past the page size.
    due = (
        FlowRunFilter(
            expected_start_time=FlowRunFilterExpectedStartTime(before_=until + timedelta(seconds=1))
        )
        if until is not None
        else None
    )
    deadline = time.monotonic() + RUN_TIMEOUT_S + BURST_S_PER_RUN * len(deployment_ids)
    wanted = set(deployment_ids)
    last_report = 0.0
    async with get_client() as client:
        while True:
            runs = []
            ids = list(wanted)
            for start in range(0, len(ids), 100):
                runs += await client.read_flow_runs(
                    deployment_filter=DeploymentFilter(
                        id=DeploymentFilterId(any_=ids[start : start + 100])
                    ),
                    flow_run_filter=due,
                    limit=200,
                )
            by_deployment: dict[uuid.UUID, list[Any]] = {d: [] for d in wanted}
            for run in runs:
                if run.deployment_id in by_deployment:
                    by_deployment[run.deployment_id].append(run)
            done = sum(
                1
                for found in by_deployment.values()
                if found and all(r.state and r.state.is_final() for r in found)
            )
            if done == len(wanted):
                return by_deployment
            if time.monotonic() - last_report > 10:
                log(f"  {label}: {done}/{len(wanted)} finished")
                last_report = time.monotonic()
            if time.monotonic() > deadline:
                raise SystemExit(f"{label}: only {done}/{len(wanted)} runs finished in time")
            await asyncio.sleep(0.5)  # polling the API for run states


def _timing(run: Any) -> Timing:
    scheduled = run.expected_start_time
    end = run.end_time
    start = run.start_time
    if scheduled is None or end is None or start is None:
        raise SystemExit(f"flow run {run.id} ({run.state_name}) has no start/end time")
    return Timing(
        lag_s=(start - scheduled).total_seconds(),
        end_s=(end - scheduled).total_seconds(),
        state=run.state_name or "",
        run_s=(end - start).total_seconds(),
    )


async def _log_slowest(runs: list[Any], count: int = 3) -> None:
    """Log the `count` runs that ended last: their lag, duration, task runs and logs, each in
    seconds from the run's start (for E2E_TIMELINE=1: where a straggler's time went)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    for run in sorted(runs, key=lambda r: r.end_time or r.start_time)[-count:]:
        timing = _timing(run)
        log(
            f"  straggler {run.name}: lag {timing.lag_s:.1f}s, run {timing.run_s:.2f}s, "
            f"ended {timing.end_s:.1f}s after its slot"
        )
        log(f"    {await _task_timeline(run.id, run.start_time)}")
        async with get_client() as client:
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])), limit=200
            )
        for entry in sorted(logs, key=lambda e: e.timestamp):
            offset = (entry.timestamp - run.start_time).total_seconds()
            log(f"    {offset:+8.2f}s {entry.level:>2} {entry.message[:160]}")


async def _task_timeline(flow_run_id: uuid.UUID, start: datetime) -> str:
    """The run's task runs as `name start-end` in ms from the flow run's start (for --timeline)."""
    from tests.support.task_runs import final_task_runs

    # Once the server's task-run recorder has written them all (it flushes every second).
    tasks = await final_task_runs(flow_run_id, at_least=1)
    spans = sorted(
        (
            (t.start_time - start).total_seconds() * 1000,
            (t.end_time - start).total_seconds() * 1000,
            t.name,
        )
        for t in tasks
        if t.start_time and t.end_time
    )
    return "; ".join(f"{name} {a:.0f}-{b:.0f}" for a, b, name in spans)


async def _register_job(
    env: Env, at: datetime, templates: int, name: str, *, cron: bool = False
) -> Any:
    """A job of `templates` templates due at `at`: a one-time job, or (`cron`) a daily
    recurring one whose cron minute is `at` (which must be on a whole minute)."""
    from scheduler.sdk import AdScheduler

    schedule: dict[str, Any] = (
        {"type": "recurring", "cron": f"{at.minute} {at.hour} * * *", "timezone": "UTC"}
        if cron
        else {"type": "one_time", "at": at.isoformat()}
    )
    async with AdScheduler(env.tenant) as ads:
        return await ads.create(
            {
                "name": name,
                "product_id": str(env.product_id),
                "schedule": schedule,
                "templates": {"mode": "unused", "count": templates},
                "ad": {"variations": 1, "generator_block": env.generator_block},
                "template_concurrency": max(templates, 1),
            }
        )


async def _bare_deployment(env: Env, name: str) -> uuid.UUID:
    from prefect.client.orchestration import get_client

    from scheduler.pull_steps import PULL_STEP

    async with get_client() as client:
        if env.bare_flow_id is None:
            env.bare_flow_id = await client.create_flow_from_name("e2e-bare-flow")
        return await client.create_deployment(
            flow_id=env.bare_flow_id,
            name=name,
            entrypoint=BARE_ENTRYPOINT,
            work_pool_name=POOL,
            pull_steps=[{PULL_STEP: {}}],
        )


async def _schedule_bare(deployment_id: uuid.UUID, at: datetime) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

    async with get_client() as client:
        await client.create_flow_run_from_deployment(
            deployment_id, state=Scheduled(scheduled_time=at)
        )


async def single_job(env: Env, firings: int, rss: RssSampler) -> dict[str, Any]:
    """(a): firings of a 3-template job alternating with firings of the bare flow."""
    ours: list[Timing] = []
    bare: list[Timing] = []
    bare_id = await _bare_deployment(env, "single")
    for firing in range(firings):
        rss.phase = "single-ours"
        at = datetime.now(UTC) + timedelta(seconds=lead_s())
        job = await _register_job(env, at, TEMPLATES_PER_JOB, f"e2e-single-{firing}")
        runs = await _wait_final([job.prefect_deployment_id], f"job firing {firing + 1}")
        run = runs[job.prefect_deployment_id][0]
        ours.append(_timing(run))
        if TIMELINE:
            log(
                f"  timeline (ms from Running, end {ours[-1].run_s * 1000:.0f}): "
                + await _task_timeline(run.id, run.start_time)
            )
        rss.phase = "single-bare"
        await _schedule_bare(bare_id, datetime.now(UTC) + timedelta(seconds=lead_s()))
        runs = await _wait_final([bare_id], f"bare firing {firing + 1}")
        bare.append(_timing(sorted(runs[bare_id], key=lambda r: r.expected_start_time)[-1]))
        log(
            f"firing {firing + 1}: ours end {ours[-1].end_s:.2f}s (lag {ours[-1].lag_s:.2f}s, "
            f"{ours[-1].state}, run {ours[-1].run_s:.2f}s); bare end {bare[-1].end_s:.2f}s"
            f" (lag {bare[-1].lag_s:.2f}s, run {bare[-1].run_s:.2f}s)"
        )
    bad = [t.state for t in ours + bare if t.state != "Completed"]
    if bad:
        raise SystemExit(f"runs did not complete: {bad}")
    ours_end, bare_end = [t.end_s for t in ours], [t.end_s for t in bare]
    return {
        "firings": firings,
        "ours_end": _summary(ours_end),
        "bare_end": _summary(bare_end),
        "ours_lag": _summary([t.lag_s for t in ours]),
        "bare_lag": _summary([t.lag_s for t in bare]),
        "ours_run": _summary([t.run_s for t in ours]),
        "bare_run": _summary([t.run_s for t in bare]),
        "ratio_p50": round(statistics.median(ours_end) / (statistics.median(bare_end) + 0.5), 3),
        "ratio_p95": round(_pct(ours_end, 95) / (_pct(bare_end, 95) + 0.5), 3),
        # The same ratio on the runs' own durations (Running -> end): free of where in its
        # second Prefect let each run start (WaitForScheduledTime rounds to whole seconds), which
        # moves five firings' p50 of slot -> end by up to ±0.5 s for either flow.
        "run_ratio_p50": round(
            statistics.median(t.run_s for t in ours)
            / (statistics.median(t.run_s for t in bare) + 0.5),
            3,
        ),
    }


async def _check_exactly_once(env: Env, jobs: list[Any]) -> dict[str, int]:
    """Every burst job ran once: one completed scheduled row, nothing missed or doubled."""
    import sqlalchemy as sa

    from db.models import ScheduledJobRun
    from db.session import session_scope

    ids = [job.id for job in jobs]
    async with session_scope() as session:
        rows = (
            await session.execute(
                sa.select(
                    ScheduledJobRun.scheduled_job_id,
                    ScheduledJobRun.status,
                    ScheduledJobRun.skip_reason,
                ).where(ScheduledJobRun.scheduled_job_id.in_(ids))
            )
        ).all()
    per_job: dict[uuid.UUID, list[Any]] = {i: [] for i in ids}
    for row in rows:
        per_job[row.scheduled_job_id].append(row)
    return {
        "lost": sum(1 for found in per_job.values() if not found),
        "doubled": sum(1 for found in per_job.values() if len(found) > 1),
        "skipped": sum(1 for row in rows if row.status == "skipped"),
        "misfires": sum(1 for row in rows if row.skip_reason == "misfire"),
        "not_completed": sum(1 for row in rows if row.status != "completed"),
    }


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy since boot (every core; /proc/stat's `cpu`
    line less idle and iowait): the server, its database and the flow runs alike."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int, *, children: bool) -> float:
    """CPU seconds of one process (user + system), with its reaped children's when asked."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # exited meanwhile
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat(5)
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_by_part(server_pid: int | None) -> dict[str, float]:
    """CPU seconds so far of the Prefect server (with its children) and of PostgreSQL (every
    `postgres` process, with the backends the postmaster has reaped; the app database and, on
    the PostgreSQL backend, Prefect's). Read from /proc only."""
    parts = {"prefect_server": _proc_cpu(server_pid, children=True) if server_pid else 0.0}
    postgres = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            parent_comm = Path(f"/proc/{parent}/comm").read_text().strip()
        except (OSError, ValueError):
            continue
        # The postmaster (its parent is not postgres) also carries its reaped backends.
        postgres += _proc_cpu(int(entry.name), children=parent_comm != "postgres")
    parts["postgres"] = postgres
    return parts


def _cpu_delta(before: dict[str, float], after: dict[str, float], runs: int) -> dict[str, float]:
    return {k: round((after[k] - before[k]) / runs, 3) for k in before}


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


async def _boards_published_since(tenant: uuid.UUID, since: datetime) -> int:
    """Versions of the tenant's job board created since `since` (at most 200 are read)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    from flows.job_board import board_key

    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[board_key(tenant)])),
            sort=ArtifactSort.CREATED_DESC,
            limit=200,
        )
    return sum(1 for a in found if a.created is not None and a.created >= since)


async def _settled_cpu(rss: RssSampler, before: float) -> float:
    """CPU of the phase's flow-run processes, once the worker has reaped them all."""
    deadline = time.monotonic() + 60
    while True:
        if not rss.flow_run_pids() or time.monotonic() > deadline:
            return rss.children_cpu_s() - before
        await asyncio.sleep(0.2)  # the last processes are exiting


async def _burst_ours(env: Env, size: int, rss: RssSampler) -> dict[str, Any]:
    """`size` jobs registered through the SDK, due at the same moment; their figures."""
    # Registration through the SDK takes time per job: time the first, then put the slot
    # after the time the rest should take (x1.5 for a loaded machine), plus the usual lead.
    rss.phase = "registering"
    from scheduler.sdk import AdScheduler

    probe_at = datetime.now(UTC) + timedelta(hours=1)
    # Twice: the first registration pays for cold imports and connections (8 s under load,
    # against ~1.5 s for the next ones), which would put the slot half an hour away.
    for probe in range(2):
        started = time.monotonic()
        first = await _register_job(env, probe_at, 1, f"e2e-burst-probe-{probe}")
        per_job = time.monotonic() - started
        async with AdScheduler(env.tenant) as ads:
            await ads.delete(first.id)
    # Past the worker's prefetch from the end of the registrations (whatever `E2E_LEAD_S`
    # says): flow-run processes started while the rest register would slow them. Registrations
    # slow down as jobs accumulate (probed 0.21-0.28 s per job, then 0.4-0.8 s each on the
    # embedded SQLite server): three times the probe.
    at = datetime.now(UTC) + timedelta(seconds=prefetch_lead_s() + 3 * per_job * size)
    if env.cron_burst:  # the next whole minute from there: the jobs' cron minute
        at = at.replace(second=0, microsecond=0) + timedelta(minutes=1)
    kind = "daily cron" if env.cron_burst else "one-time"
    log(f"burst: registering {size} {kind} jobs (~{per_job:.2f}s each) due at {at:%H:%M:%S}")
    jobs = []
    for i in range(size):
        if datetime.now(UTC) > at - timedelta(seconds=2):
            raise SystemExit(
                f"registering the burst took longer than planned ({i} of {size}); rerun"
            )
        jobs.append(
            await _register_job(env, at, 1, f"e2e-burst-{env.rounds}-{i}", cron=env.cron_burst)
        )
    # The phase and its CPU start when the worker may start the first process (its prefetch
    # before the slot), as the bare burst's do: a cron minute's wait is idle time, not the runs'.
    idle = at - timedelta(seconds=prefetch_lead_s()) - datetime.now(UTC)
    await asyncio.sleep(max(idle.total_seconds(), 0))  # waiting for the cron minute
    rss.phase = "burst-ours"
    cpu_before, machine_before = rss.children_cpu_s(), machine_busy_s()
    parts_before = cpu_by_part(env.server_pid)
    deployments = [job.prefect_deployment_id for job in jobs]
    runs = await _wait_final(deployments, "burst (ours)", until=at)
    ours_cpu = await _settled_cpu(rss, cpu_before)
    ours_machine = machine_busy_s() - machine_before
    ours_parts = _cpu_delta(parts_before, cpu_by_part(env.server_pid), size)
    ours = [_timing(r) for found in runs.values() for r in found]
    boards = await _boards_published_since(env.tenant, at)
    if TIMELINE:
        await _log_slowest([r for found in runs.values() for r in found])
    prefect_runs = [len(found) for found in runs.values()]
    checks = await _check_exactly_once(env, jobs)
    checks["prefect_runs_not_one"] = sum(1 for n in prefect_runs if n != 1)
    checks["prefect_not_completed"] = sum(1 for t in ours if t.state != "Completed")
    rss.phase = "registering"
    # The next round's jobs are alone on the tenant's board, as these were.
    async with AdScheduler(env.tenant) as ads:
        for job in jobs:
            await ads.delete(job.id)
    return {
        "timings": ours,
        "checks": checks,
        "boards": boards,
        "cpu": ours_cpu,
        "machine": ours_machine,
        "parts": ours_parts,
    }


async def _burst_bare(env: Env, size: int, rss: RssSampler) -> dict[str, Any]:
    """`size` bare-flow deployments, one run each due at the same moment; their figures."""
    rss.phase = "registering"
    bare_ids = [await _bare_deployment(env, f"burst-{env.rounds}-{i}") for i in range(size)]
    at = datetime.now(UTC) + timedelta(seconds=lead_s() + 0.2 * size)
    for deployment_id in bare_ids:
        await _schedule_bare(deployment_id, at)
    rss.phase = "burst-bare"
    cpu_before, machine_before = rss.children_cpu_s(), machine_busy_s()
    parts_before = cpu_by_part(env.server_pid)
    bare_runs = await _wait_final(bare_ids, "burst (bare)")
    bare_cpu = await _settled_cpu(rss, cpu_before)
    bare_machine = machine_busy_s() - machine_before
    bare_parts = _cpu_delta(parts_before, cpu_by_part(env.server_pid), size)
    rss.phase = "idle"
    return {
        "timings": [_timing(r) for found in bare_runs.values() for r in found],
        "cpu": bare_cpu,
        "machine": bare_machine,
        "parts": bare_parts,
    }


async def burst(
    env: Env, size: int, rss: RssSampler, *, bare_first: bool = False
) -> dict[str, Any]:
    """(b), one round: `size` jobs due at the same moment, and `size` bare deployments due
    together, one after the other (`bare_first`: the bare flow's burst first)."""
    env.rounds += 1
    if bare_first:
        bare_half = await _burst_bare(env, size, rss)
        ours_half = await _burst_ours(env, size, rss)
    else:
        ours_half = await _burst_ours(env, size, rss)
        bare_half = await _burst_bare(env, size, rss)
    ours, bare = ours_half["timings"], bare_half["timings"]
    ours_last, bare_last = max(t.end_s for t in ours), max(t.end_s for t in bare)
    return {
        "jobs": size,
        "bare_first": bare_first,
        "checks": ours_half["checks"],
        "ours_last_end_s": round(ours_last, 2),
        "bare_last_end_s": round(bare_last, 2),
        "ours_runs_per_min": round(size * 60 / ours_last, 1),
        "bare_runs_per_min": round(size * 60 / bare_last, 1),
        "ours_lag": _summary([t.lag_s for t in ours]),
        "bare_lag": _summary([t.lag_s for t in bare]),
        "ratio": round(ours_last / bare_last, 3),
        # Job boards the burst's runs published (one tenant: coalesced, deferred while busy).
        "boards_published": ours_half["boards"],
        # One straggler (on SQLite, a 503 "database is locked" and the client's 2-4-8 s backoff)
        # moves the last end by tens of seconds: the 95th percentile beside it.
        "ratio_p95_end": round(_p95([t.end_s for t in ours]) / _p95([t.end_s for t in bare]), 3),
        "ours_cpu_s_per_run": round(ours_half["cpu"] / size, 2),
        "bare_cpu_s_per_run": round(bare_half["cpu"] / size, 2),
        # The whole machine (server, databases, flow runs, this benchmark) from the slot's phase
        # start until its processes are reaped: CPU-bound when close to cores x the phase's time.
        "ours_machine_cpu_s_per_run": round(ours_half["machine"] / size, 2),
        "bare_machine_cpu_s_per_run": round(bare_half["machine"] / size, 2),
        # Of which (per run): the Prefect server process, and PostgreSQL.
        "ours_cpu_s_per_run_by_part": ours_half["parts"],
        "bare_cpu_s_per_run_by_part": bare_half["parts"],
    }


def burst_rounds_summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The medians over `rounds` (`burst` results): what to quote on a shared machine."""

    def median(key: str) -> float:
        return round(statistics.median(r[key] for r in rounds), 3)

    return {
        "rounds": len(rounds),
        "ratios": [r["ratio"] for r in rounds],
        "ratio_median": median("ratio"),
        "ratio_p95_end_median": median("ratio_p95_end"),
        "machine_cpu_ratio_median": round(
            statistics.median(
                r["ours_machine_cpu_s_per_run"] / r["bare_machine_cpu_s_per_run"] for r in rounds
            ),
            3,
        ),
        "ours_last_end_s_median": median("ours_last_end_s"),
        "bare_last_end_s_median": median("bare_last_end_s"),
        "checks_failed": sum(v for r in rounds for v in r["checks"].values()),
    }


async def _create_pool(engine_command: bool) -> None:
    """The process pool: ours (`process_base_job_template`, the engine as the pool's command:
    one interpreter per flow run), or Prefect's default without a command (a workspace
    supervisor process, then the engine process)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.workers.process import ProcessWorker

    from flows.deployment_sync import process_base_job_template

    template = (
        process_base_job_template()
        if engine_command
        else ProcessWorker.get_default_base_job_template()
    )
    async with get_client() as client:
        await client.create_work_pool(
            WorkPoolCreate(name=POOL, type="process", base_job_template=template)
        )


async def prepare(fake_url: str, templates: int, engine_command: bool) -> Env:
    """Pool, generator block (and its limit), sample data."""
    from pydantic import SecretStr

    from blocks.generators.gemini import GeminiImageGenerator
    from blocks.storage import default_storage
    from db.session import dispose_engines
    from flows.limits import ensure_provider_limit
    from flows.sample_data import seed_sample_data
    from tests.support.http_fake import GEMINI_KEY

    await _create_pool(engine_command)
    name = f"e2e-gemini-{uuid.uuid4().hex[:8]}"
    generator = GeminiImageGenerator(
        api_key=SecretStr(GEMINI_KEY),
        base_url=f"{fake_url}/v1beta",
        provider_limit=name,
        max_in_flight=1000,
        requests_per_minute=None,
    )
    await generator.save(name)
    await ensure_provider_limit(generator)
    tenant = uuid.uuid4()
    _brand, product, _ = await seed_sample_data(tenant, default_storage(), templates=templates)
    await dispose_engines()
    return Env(
        tenant=tenant, product_id=product.id, generator_block=f"{generator._block_type_slug}/{name}"
    )


def _keep_logs(home: Path, into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    for path in home.glob("*.log"):
        shutil.copy(path, into / path.name)
    log(f"logs copied to {into}")


def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    """Everything for one Prefect backend; returns its figures."""
    from config import get_settings
    from db.migrate import upgrade
    from db.session import dispose_engines
    from scheduler.local_prefect import (
        TUNED_WORKER_ENV,
        local_prefect_server,
        prefect_env,
        process_worker,
    )
    from tests.support.databases import scratch_pg_database
    from tests.support.http_fake import FakeServer, gemini_default, running

    with ExitStack() as stack:
        data_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix=f"e2e-{backend}-"))
        app_db = stack.enter_context(scratch_pg_database("adsched_e2e_app"))
        prefect_db = (
            stack.enter_context(scratch_pg_database("adsched_e2e_prefect"))
            if backend == "postgres"
            else None
        )
        app_env = {
            "AD_SCHEDULER_DATA_DIR": data_dir,
            "DATABASE_URL": app_db,
            "AD_SCHEDULER_WORK_POOL": POOL,
        }
        os.environ.update(app_env)
        get_settings.cache_clear()
        upgrade(app_db)
        home = Path(data_dir) / "prefect-home"
        home.mkdir()
        if args.logs:
            # Registered before the server and worker start, so it runs after they stop.
            stack.callback(_keep_logs, home, Path(args.logs) / backend)
        fake = FakeServer(gemini_default())
        fake.latency_s = LATENCY_S
        stack.enter_context(running(fake))
        log(f"[{backend}] starting the Prefect server")
        started: list[int] = []
        api_url = stack.enter_context(
            local_prefect_server(
                home, database_url=prefect_db, on_start=lambda proc: started.append(proc.pid)
            )
        )
        os.environ.update(PREFECT_API_URL=api_url, PREFECT_HOME=str(home))
        from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

        stack.enter_context(
            temporary_settings(updates={PREFECT_API_URL: api_url, PREFECT_HOME: str(home)})
        )
        templates = TEMPLATES_PER_JOB * args.firings + args.burst * args.rounds + 4
        env = asyncio.run(prepare(fake.url, templates, args.engine_command))
        env.server_pid = started[0] if started else None
        env.cron_burst = args.burst_kind == "cron"
        worker_env = prefect_env(
            home, extra={"PREFECT_API_URL": api_url, **app_env, **TUNED_WORKER_ENV}
        )
        log(
            f"[{backend}] worker on {POOL} (--limit {args.limit}, fork server: "
            f"{args.forkserver}) with {TUNED_WORKER_ENV}"
        )
        worker = stack.enter_context(
            process_worker(
                POOL,
                worker_env,
                home / "worker.log",
                limit=args.limit,
                forkserver=args.forkserver,
            )
        )
        rss = stack.enter_context(
            RssSampler(
                worker.process.pid, worker.forkserver.process.pid if worker.forkserver else None
            )
        )

        async def measure() -> dict[str, Any]:
            try:
                single = await single_job(env, args.firings, rss) if args.firings else None
                # Rounds alternate which burst goes first: a machine that slows down or speeds
                # up during the benchmark does not favour one side every time.
                rounds = [
                    await burst(env, args.burst, rss, bare_first=i % 2 == 1)
                    for i in range(args.rounds if args.burst else 0)
                ]
            finally:
                await dispose_engines()
            return {
                "single": single,
                "burst": rounds[0] if rounds else None,
                "burst_rounds": rounds[1:],
                "burst_summary": burst_rounds_summary(rounds) if rounds else None,
            }

        result = asyncio.run(measure())
        # This process's own events (the SDK's board artifacts) go to this backend's server
        # before it stops: left queued, the events worker retried the stopped server through the
        # next backend's measurements and held the process open at exit.
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=30, at_exit=False)
        result["rss_mb"] = {
            "worker_peak": round(rss.worker_kb / 1024, 1),
            "flow_run_peak_ours": round(
                max(rss.flow_run_kb.get(p, 0) for p in ("single-ours", "burst-ours")) / 1024, 1
            ),
            "flow_run_peak_bare": round(
                max(rss.flow_run_kb.get(p, 0) for p in ("single-bare", "burst-bare")) / 1024, 1
            ),
            "flow_run_processes_at_once": rss.peak_flow_runs.get("burst-ours", 0),
            # Every process of every flow run in flight at the worst moment of the burst.
            "burst_ours_total": round(rss.total_kb.get("burst-ours", 0) / 1024, 1),
            "burst_bare_total": round(rss.total_kb.get("burst-bare", 0) / 1024, 1),
            # The same as proportional set sizes: forked runs share the fork server's pages.
            "burst_ours_total_pss": round(rss.total_pss_kb.get("burst-ours", 0) / 1024, 1),
            "burst_bare_total_pss": round(rss.total_pss_kb.get("burst-bare", 0) / 1024, 1),
            "forkserver_peak": round(rss.forkserver_kb / 1024, 1),
        }
        result["worker_limit"] = args.limit
        result["burst_kind"] = args.burst_kind
        result["engine_command"] = args.engine_command
        result["forkserver"] = args.forkserver
        result["worker_env"] = dict(TUNED_WORKER_ENV)
        return result


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    """Run the benchmark and print the result line.

    SIGTERM, and SIGINT even when the shell that started it in the background ignored it, stop
    it as Ctrl-C does: the worker, the server and the scratch databases are stopped and dropped
    on the way out (a SIGTERM once left them all running).
    """
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefect-db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--quick", action="store_true", help="2 firings, a burst of 10")
    parser.add_argument("--firings", type=int, default=5)
    parser.add_argument("--burst", type=int, default=100, help="jobs due together (0: none)")
    parser.add_argument(
        "--limit", type=int, default=8, help="the worker's --limit (DEFAULT_WORKER_LIMIT: 8)"
    )
    parser.add_argument(
        "--engine-command",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the pool's command is ours (`engine_command()`: the fork server's client, or"
        " `python -m prefect.engine` without one), as our pools have; --no-engine-command:"
        " Prefect's default (workspace supervisor + engine)",
    )
    parser.add_argument(
        "--forkserver",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the worker has a fork server (`process_worker`, as `ad-scheduler up` and `make"
        " run` start it): with --engine-command, runs are forked from it; --no-forkserver: each"
        " run is a fresh interpreter",
    )
    parser.add_argument(
        "--burst-kind",
        choices=("cron", "one-time"),
        default="cron",
        help="the burst's jobs: daily cron jobs due the same minute (Monday 09:00), or one-time"
        " jobs (each completes its job and pauses its deployment as it ends)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="bursts of each side, alternating which goes first; the medians are reported",
    )
    parser.add_argument("--logs", help="copy the server and worker logs into this folder")
    args = parser.parse_args()
    if args.quick:
        args.firings, args.burst = min(args.firings, 2), min(args.burst, 10)
    backends = ["sqlite", "postgres"] if args.prefect_db == "both" else [args.prefect_db]
    result: dict[str, Any] = {
        "loadavg_start": loadavg(),
        "cpu_ref_s": cpu_reference_s(),
        "quick": args.quick,
    }
    for backend in backends:
        result[backend] = run_backend(backend, args)
        log(f"[{backend}] {json.dumps(result[backend])}")
    result["loadavg_end"] = loadavg()
    result["cpus"] = os.cpu_count()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt as stop:
        log(f"stopped ({stop or 'interrupted'}): its server, worker and databases are gone")
        sys.exit(130)
