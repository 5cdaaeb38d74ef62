"""The flow-run command of our process pools: the run's process is forked from a warm fork server.

`setsid <python> -m scheduler.forkserver_client` (the pool's `command`, see
`flows.deployment_sync.engine_command`) stands where `python -m prefect.engine` stood. When the
worker's environment names a fork server (`AD_SCHEDULER_FORKSERVER`, set by
`scheduler.local_prefect.process_worker`) it asks that server for a child that runs the engine,
hands it this process's standard streams, working directory, arguments and environment, relays
the signals it gets (the worker's SIGTERM is how Prefect cancels a run) and exits as the child
exited. Without one, or when the server does not answer, it becomes `python -m prefect.engine`
itself (`os.execv`): the same process, the same behaviour as before, ~40 ms later.

Why: a fresh interpreter spends ~2 CPU-s importing Prefect and the flow module before the run
starts (docs/scaling.md, py-spy: ~84 % of a flow-run process); the fork server has paid that
once, and a child starts in ~0.1 s. This module imports the standard library only, so the
fallback costs nothing but its own start.

Protocol (one Unix stream connection per run, `scheduler.forkserver` is the other end):
  client -> server: a 4-byte big-endian length and that many bytes of JSON
  (`{"argv": [...], "cwd": "...", "env": {...}}`), the first chunk carrying stdin, stdout and
  stderr as SCM_RIGHTS file descriptors;
  server -> client: JSON lines, `{"pid": N}` once the child exists, then `{"status": S}` with its
  raw wait status (`os.waitstatus_to_exitcode`) when it ends. If the client goes away first the
  server kills the child (the worker killed the run); if the server goes away first the child
  runs on and this process waits for it to end (a pidfd), then exits 1: its status is unknown.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import sys
from types import FrameType
from typing import NoReturn

#: Signals passed on to the child: the worker's cancellation (SIGTERM), a person's Ctrl-C, a
#: hang-up; the rest (SIGKILL included) end this process, and the server then kills the child.
RELAYED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
#: How long a connection to the server may take before the run falls back to a fresh engine.
CONNECT_TIMEOUT_S = 5.0
#: How long to wait for the child's pid before falling back. A server that is still importing
#: (just started, on a loaded machine: up to ~50 s seen here) answers late but answers; one that
#: is stopped or hung would otherwise hold the run forever. The server forks nothing for a client
#: that has gone, so the run does not start twice.
PID_TIMEOUT_S = 120.0


def engine_argv(argv: list[str]) -> list[str]:
    """`python -m prefect.engine` with this command's arguments (the flow run id, if given)."""
    return [sys.executable, "-m", "prefect.engine", *argv[1:]]


def encode_request(argv: list[str], cwd: str, env: dict[str, str]) -> bytes:
    """The request frame: 4-byte big-endian length, then the JSON body."""
    body = json.dumps({"argv": argv, "cwd": cwd, "env": env}).encode()
    return struct.pack(">I", len(body)) + body


def _connect(path: str) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(CONNECT_TIMEOUT_S)
    try:
        sock.connect(path)
        frame = encode_request(sys.argv, os.getcwd(), dict(os.environ))
        # The three streams travel with the first bytes; what send_fds did not take, sent after.
        sent = socket.send_fds(sock, [frame], [0, 1, 2])
        sock.sendall(frame[sent:])
    except OSError:
        sock.close()
        return None
    return sock


class _Relay:
    """Passes the signals this process gets to the child, once the child's pid is known."""

    def __init__(self) -> None:
        self.child: int | None = None
        self.pending: list[int] = []

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.child is None:
            self.pending.append(signum)
            return
        try:
            os.kill(self.child, signum)
        except ProcessLookupError:  # it has just ended; its status is on its way
            pass

    def started(self, pid: int) -> None:
        self.child = pid
        for signum in self.pending:
            self(signum, None)
        self.pending.clear()


def _exit_as(status: int) -> NoReturn:
    """Exit the way the child did: its exit code, or killed by the same signal."""
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        if -code not in (signal.SIGKILL, signal.SIGSTOP):  # those have no handler to reset
            signal.signal(-code, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [-code])
        os.kill(os.getpid(), -code)
    sys.stdout.flush()
    os._exit(code if code >= 0 else 128 - code)


def _wait_orphan(pid: int) -> NoReturn:
    """The server is gone and the child runs on: wait for it to end, then exit 1."""
    print(
        f"ad-scheduler: the fork server stopped while flow-run process {pid} ran; "
        "waiting for it to end (its exit status will be unknown)",
        file=sys.stderr,
        flush=True,
    )
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        os._exit(1)
    while True:
        try:
            select.select([fd], [], [])
            break
        except InterruptedError:  # pragma: no cover - PEP 475 retries select itself
            continue
    os._exit(1)


def run(path: str) -> NoReturn:
    """Run this flow run in a child of the fork server at `path`, or as a fresh engine."""
    relay = _Relay()
    # Installed before the request: a cancellation that lands while the child starts is
    # passed on as soon as its pid arrives, not lost.
    for signum in RELAYED_SIGNALS:
        signal.signal(signum, relay)
    sock = _connect(path)
    if sock is None:
        _fall_back(relay, "the fork server does not answer")
    sock.settimeout(PID_TIMEOUT_S)
    stream = sock.makefile("rb")
    try:
        for line in stream:
            message = json.loads(line)
            if "pid" in message:
                relay.started(int(message["pid"]))
                sock.settimeout(None)
            elif "status" in message:
                _exit_as(int(message["status"]))
            elif "error" in message and relay.child is None:
                _fall_back(relay, f"the fork server: {message['error']}", sock)
    except (OSError, ValueError) as exc:  # timed out, reset, or a garbled line
        if relay.child is None:
            _fall_back(relay, f"the fork server failed ({exc!r})", sock)
    if relay.child is None:  # the server closed before forking: nothing ran yet
        _fall_back(relay, "the fork server closed the connection", sock)
    _wait_orphan(relay.child)


def _fall_back(relay: _Relay, reason: str, sock: socket.socket | None = None) -> NoReturn:
    """Become a fresh engine, with the signals this process got meanwhile delivered to it."""
    print(f"ad-scheduler: {reason}; starting the flow run's engine afresh", file=sys.stderr)
    if sock is not None:
        sock.close()  # before anything else: the server then forks nothing for this run
    for signum in RELAYED_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    for pending in relay.pending:  # a cancellation that came while waiting ends this process
        os.kill(os.getpid(), pending)
    exec_engine()


def exec_engine() -> NoReturn:
    """Become `python -m prefect.engine` with this command's arguments."""
    argv = engine_argv(sys.argv)
    os.execv(argv[0], argv)


def main() -> NoReturn:
    """Entry point: the pool's command."""
    # Read here, not through config.settings (which imports pydantic, ~0.2 s in every run's
    # process): the field `Settings.forkserver` documents and validates the same variable.
    path = os.environ.get("AD_SCHEDULER_FORKSERVER", "")
    if not path:
        exec_engine()
    run(path)


if __name__ == "__main__":
    main()
