"""`ad-scheduler up`: a server whose UI calls its own (non-4200) port, a worker and the
reconciler (and the worker's fork server); SIGTERM stops exactly the four processes it started."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from scheduler.local_prefect import free_port, port_is_free
from tests.ui.browser import open_page, wait_for_text

START_TIMEOUT_S = 240


def _poll(what: str, check, timeout: float = START_TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.5)  # polling a condition, with a deadline
    raise AssertionError(f"timed out waiting for {what}")


def _get_json(url: str, method: str = "GET"):
    try:
        response = httpx.request(method, url, json={} if method == "POST" else None, timeout=5)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) is not running either.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


async def test_up_serves_a_ui_on_its_port_and_stops_what_it_started(tmp_path, browser) -> None:
    port = free_port()
    assert port != 4200
    out = tmp_path / "up.out"
    env = {**os.environ, "AD_SCHEDULER_DATA_DIR": str(tmp_path / "data")}
    env.pop("PREFECT_API_URL", None)
    env.pop("DATABASE_URL", None)
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli", "up", "--port", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        ui = f"http://127.0.0.1:{port}"
        api = f"{ui}/api"
        pids_line = _poll(
            "the pids line",
            lambda: re.search(
                r"server pid (\d+), worker pid (\d+).*fork server pid (\d+)\), "
                r"reconciler pid (\d+)",
                out.read_text(),
            ),
        )
        pids = [int(p) for p in pids_line.groups()]
        # The UI is told to call this server, not the default port 4200.
        assert _get_json(f"{ui}/ui-settings")["api_url"] == api
        _poll(
            "the reconciler's deployment",
            lambda: any(
                d["name"] == "ad-scheduler-up"
                for d in _get_json(f"{api}/deployments/filter", "POST") or []
            ),
        )
        _poll(
            "the worker",
            lambda: _get_json(f"{api}/work_pools/ad-scheduler-process/workers/filter", "POST"),
        )
        # In a browser, the UI reaches its API: it lists the reconciler's deployment.
        page = await open_page(browser, f"{ui}/deployments")
        text = await wait_for_text(page, "ad-scheduler-up", "reconcile-job-runs")
        assert "Can't connect" not in text
        await page.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()  # only our own `up` process, by its pid
            raise
    log = out.read_text()
    assert code == 0, log
    assert "SIGTERM: stopping" in log and "stopped the reconciler, the worker" in log
    _poll("the four processes to be gone", lambda: not any(_alive(p) for p in pids), 30)
    assert port_is_free(port)


def test_up_refuses_a_port_in_use(tmp_path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "AD_SCHEDULER_DATA_DIR": str(tmp_path)}
        result = subprocess.run(
            [sys.executable, "-m", "scheduler.cli", "up", "--port", str(port)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
    assert result.returncode == 2
    assert f"--port {port}" in result.stderr and "allowed: a free port" in result.stderr
    assert "Traceback" not in result.stderr
