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
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.settings import FORKSERVER_ENV
from scheduler.forkserver_client import encode_request
from scheduler.local_prefect import forkserver_process

PROBE = "tests.support.forkserver_probe"
TIMEOUT_S = 60


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, int]]:
    log = tmp_path / "forkserver.log"
    extra = ("--preload", PROBE, "prefect.settings", "--module", PROBE)
    with forkserver_process(dict(os.environ), log, extra_args=extra) as forkserver:
        yield forkserver.path, log, forkserver.process.pid


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
    server: tuple[str, Path, int], tmp_path: Path
) -> None:
    path, log, pid = server
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
    server: tuple[str, Path, int], tmp_path: Path
) -> None:
    path, _log, _pid = server
    proc = client(path, "wait", cwd=tmp_path)
    assert proc.stdout is not None
    child = json.loads(proc.stdout.readline())["pid"]
    os.kill(child, signal.SIGKILL)
    assert proc.wait(timeout=TIMEOUT_S) == -signal.SIGKILL


def test_the_workers_sigterm_reaches_the_child(
    server: tuple[str, Path, int], tmp_path: Path
) -> None:
    path, _log, _pid = server
    proc = client(path, "wait", cwd=tmp_path)
    assert proc.stdout is not None
    json.loads(proc.stdout.readline())
    proc.send_signal(signal.SIGTERM)  # what a worker's cancellation sends the command
    out, _err = proc.communicate(timeout=TIMEOUT_S)
    assert "terminated" in out
    assert proc.returncode == 7


def test_a_command_killed_outright_takes_its_child_with_it(
    server: tuple[str, Path, int], tmp_path: Path
) -> None:
    path, log, pid = server
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


def test_the_childs_prefect_settings_are_the_runs(
    server: tuple[str, Path, int], tmp_path: Path
) -> None:
    path, _log, _pid = server
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


def raw_request(path: str, frame: bytes, fds: list[int]) -> socket.socket:
    """A request sent by hand, as a buggy or hostile client might."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT_S)
    sock.connect(path)
    socket.send_fds(sock, [frame], fds)
    return sock


def replies(sock: socket.socket) -> list[dict[str, object]]:
    with sock, sock.makefile("rb") as stream:
        return [json.loads(line) for line in stream]


def test_malformed_requests_are_refused_and_the_server_serves_on(
    server: tuple[str, Path, int], tmp_path: Path
) -> None:
    path, log, pid = server
    streams = [0, 1, 2]
    bad = [
        (struct.pack(">I", 2) + b"{}", streams),  # no argv, cwd, env
        (struct.pack(">I", 2) + b"[]", streams),  # not an object
        (struct.pack(">I", 100_000) + b"[" * 100_000, streams),  # nested past recursion
        (encode_request(["x"], str(tmp_path), {"A": 1}), streams),  # type: ignore[dict-item]
        (encode_request(["x"], str(tmp_path), {}), []),  # no streams
        (b"\x00\x00", streams),  # truncated
    ]
    for frame, fds in bad:
        answer = replies(raw_request(path, frame, fds))
        assert len(answer) == 1 and "bad request" in str(answer[0]["error"]), answer
    # The server's own descriptors: none of the refused requests' streams left open in it.
    server_fds = len(os.listdir(f"/proc/{pid}/fd"))
    proc = client(path, "report", "0", cwd=tmp_path)
    _out, err = proc.communicate("\n", timeout=TIMEOUT_S)
    assert proc.returncode == 0, (err, log.read_text())
    assert len(os.listdir(f"/proc/{pid}/fd")) == server_fds


def test_a_sigterm_sent_as_the_child_starts_is_not_lost(
    server: tuple[str, Path, int], tmp_path: Path
) -> None:
    """The worker may cancel a run the instant its process exists: the signal must reach the
    run (here the probe), not the server's handlers the child inherited at the fork."""
    path, _log, _pid = server
    for attempt in range(10):
        out_r, out_w = os.pipe()
        sock = raw_request(
            path, encode_request(["probe", "wait"], str(tmp_path), dict(os.environ)), [0, out_w, 2]
        )
        os.close(out_w)
        with sock.makefile("rb") as stream:
            child = json.loads(stream.readline())["pid"]
            os.kill(child, signal.SIGTERM)  # at once: the child is still in the server's code
            status = json.loads(stream.readline())["status"]
        sock.close()
        os.close(out_r)
        # Default action before the probe set its handler, or the probe's handler after.
        assert os.waitstatus_to_exitcode(status) in (-signal.SIGTERM, 7), (attempt, status)


def test_a_client_that_gave_up_before_its_turn_gets_no_child(
    server: tuple[str, Path, int], tmp_path: Path
) -> None:
    """A client that stops waiting (it then starts the run's engine itself) must not also have
    it started by the server when the server reaches its request."""
    path, log, pid = server
    os.kill(pid, signal.SIGSTOP)  # a server too busy to accept
    try:
        gave_up = raw_request(
            path, encode_request(["probe", "gave-up-run"], str(tmp_path), {}), [0, 1, 2]
        )
        gave_up.close()
    finally:
        os.kill(pid, signal.SIGCONT)
    proc = client(path, "report", "0", cwd=tmp_path)
    _out, err = proc.communicate("\n", timeout=TIMEOUT_S)
    assert proc.returncode == 0, err
    assert "gave-up-run" not in log.read_text()


def test_a_dead_server_makes_new_runs_start_afresh_not_hang(tmp_path: Path) -> None:
    extra = ("--preload", PROBE, "--module", PROBE)
    with forkserver_process(dict(os.environ), tmp_path / "fs.log", extra_args=extra) as server:
        server.process.kill()
        server.process.wait(timeout=TIMEOUT_S)
        proc = client(server.path, "not-a-uuid", cwd=tmp_path)
        _out, err = proc.communicate("", timeout=TIMEOUT_S)
    assert proc.returncode == 1
    assert "starting the flow run's engine afresh" in err
    assert "Invalid flow run id" in err  # from `python -m prefect.engine` itself


def test_once_the_projects_code_changes_runs_start_afresh_not_forked(
    server: tuple[str, Path, int], tmp_path: Path
) -> None:
    # A deploy that changes the code in place: a forked run would run the new flow file over
    # the old modules the server loaded. The probe stands for them (a project module it loaded).
    path, log, _pid = server
    proc = client(path, "report", "0", cwd=tmp_path)
    out, err = proc.communicate("", timeout=TIMEOUT_S)
    assert proc.returncode == 0, err
    probe = Path(__file__).parents[1] / "support" / "forkserver_probe.py"
    before = probe.stat()
    try:
        os.utime(probe, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
        for _ in range(2):  # refused for good, not once
            proc = client(path, "not-a-uuid", cwd=tmp_path)
            _out, err = proc.communicate("", timeout=TIMEOUT_S)
            assert proc.returncode == 1
            assert "the project's code changed since the server started" in err
            assert "forkserver_probe.py" in err
            assert "Invalid flow run id" in err  # from `python -m prefect.engine` itself
    finally:
        os.utime(probe, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert log.read_text().count("the project's code changed") == 1
