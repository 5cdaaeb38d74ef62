"""The fork server and the pools' command (`scheduler.forkserver`, `scheduler.forkserver_client`).

Real processes, no Prefect worker: a fork server started as `process_worker` starts it (socket
bound by the launcher, handed over), whose children run `tests/support/forkserver_probe.py`
instead of the engine, and clients started as the worker starts the pool's command. What a
worker relies on is checked here: the child gets the command's streams, working directory,
arguments and environment, in a session of its own; its exit code or killing signal is the
command's; the worker's SIGTERM reaches it; a command killed outright takes its child with it;
and with no fork server the command is `python -m prefect.engine` itself. The same command under
a real worker, with real jobs, cancellations and crashes: tests/production/test_engine_command.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.settings import FORKSERVER_ENV
from scheduler.local_prefect import forkserver_process

PROBE = "tests.support.forkserver_probe"
TIMEOUT_S = 60


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    log = tmp_path / "forkserver.log"
    extra = ("--preload", PROBE, "prefect.settings", "--module", PROBE)
    with forkserver_process(dict(os.environ), log, extra_args=extra) as forkserver:
        yield forkserver.path, log


def client(
    path: str, *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """The pool's command, started as a process worker starts it."""
    return subprocess.Popen(
        [sys.executable, "-m", "scheduler.forkserver_client", *args],
        env={**os.environ, FORKSERVER_ENV: path, **(env or {})},
        cwd=cwd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_gone(pid: int) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while (
        Path(f"/proc/{pid}").exists()
        and "Z" != Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    ):
        assert time.monotonic() < deadline, f"process {pid} still alive"
        time.sleep(0.05)  # polling the process table


def test_the_child_is_the_commands_process_in_all_a_worker_sees(
    server: tuple[str, Path], tmp_path: Path
) -> None:
    path, log = server
    work = tmp_path / "work"
    work.mkdir()
    proc = client(path, "report", "3", cwd=work, env={"PROBE_VALUE": "from the run"})
    out, err = proc.communicate("a line for stdin\n", timeout=TIMEOUT_S)
    assert proc.returncode == 3, (out, err, log.read_text())
    report = json.loads(out.splitlines()[-1])
    assert report["argv"] == ["report", "3"]
    assert report["cwd"] == str(work) == report["path0"]
    assert report["value"] == "from the run"
    assert report["stdin"] == "a line for stdin"
    assert "to stderr" in err
    # Its own session (as `setsid` gave a fresh engine), forked by the server, not the client.
    assert report["sid"] == report["pid"]
    assert report["ppid"] != proc.pid
    assert f"forked flow-run process {report['pid']}" in log.read_text()


def test_a_child_killed_by_a_signal_kills_its_command_the_same_way(
    server: tuple[str, Path], tmp_path: Path
) -> None:
    path, _log = server
    proc = client(path, "wait", cwd=tmp_path)
    assert proc.stdout is not None
    child = json.loads(proc.stdout.readline())["pid"]
    os.kill(child, signal.SIGKILL)
    assert proc.wait(timeout=TIMEOUT_S) == -signal.SIGKILL


def test_the_workers_sigterm_reaches_the_child(server: tuple[str, Path], tmp_path: Path) -> None:
    path, _log = server
    proc = client(path, "wait", cwd=tmp_path)
    assert proc.stdout is not None
    json.loads(proc.stdout.readline())
    proc.send_signal(signal.SIGTERM)  # what a worker's cancellation sends the command
    out, _err = proc.communicate(timeout=TIMEOUT_S)
    assert "terminated" in out
    assert proc.returncode == 7


def test_a_command_killed_outright_takes_its_child_with_it(
    server: tuple[str, Path], tmp_path: Path
) -> None:
    path, log = server
    proc = client(path, "wait", cwd=tmp_path)
    assert proc.stdout is not None
    child = json.loads(proc.stdout.readline())["pid"]
    proc.kill()  # a worker's hard kill
    proc.wait(timeout=TIMEOUT_S)
    wait_gone(child)
    deadline = time.monotonic() + TIMEOUT_S
    while f"flow-run process {child}: exit -9" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)  # polling the server's log


def test_the_childs_prefect_settings_are_the_runs(server: tuple[str, Path], tmp_path: Path) -> None:
    path, _log = server
    url = "http://127.0.0.1:9/api/the-runs-own"
    proc = client(path, "settings", cwd=tmp_path, env={"PREFECT_API_URL": url})
    out, err = proc.communicate("", timeout=TIMEOUT_S)
    assert proc.returncode == 0, err
    assert out.strip() == url


def test_a_stopped_server_leaves_its_runs_running_and_their_commands_waiting(
    tmp_path: Path,
) -> None:
    extra = ("--preload", PROBE, "--module", PROBE)
    with forkserver_process(dict(os.environ), tmp_path / "fs.log", extra_args=extra) as server:
        proc = client(server.path, "wait", cwd=tmp_path)
        assert proc.stdout is not None
        child = json.loads(proc.stdout.readline())["pid"]
    # The server has stopped; the run goes on, and its command waits for it.
    assert Path(f"/proc/{child}").exists()
    assert proc.poll() is None
    os.kill(child, signal.SIGTERM)
    _out, err = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 1
    assert "fork server stopped" in err


def test_without_a_fork_server_the_command_is_the_engine_itself(tmp_path: Path) -> None:
    """No server listening (a stale socket path) or none named: `python -m prefect.engine`,
    exactly: same output, same exit code for a bad flow run id."""
    expected = subprocess.run(
        [sys.executable, "-m", "prefect.engine", "not-a-uuid"],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert expected.returncode == 1 and "Invalid flow run id" in expected.stderr
    for path in (str(tmp_path / "no-such.sock"), ""):
        proc = client(path, "not-a-uuid", cwd=tmp_path)
        _out, err = proc.communicate("", timeout=TIMEOUT_S)
        assert proc.returncode == expected.returncode
        assert "Invalid flow run id" in err
