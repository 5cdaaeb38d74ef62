"""A fork server for flow-run processes: Prefect's engine and our flows imported once, then forked.

A process worker starts each flow run as a fresh interpreter that spends ~2 CPU-s importing
Prefect and the flow module before the run begins (docs/scaling.md): in a burst of 100 runs on
two cores that is most of the wait. This server imports them once; `scheduler.forkserver_client`
(the process pools' `command`) asks it for a child per run. The child becomes the process the
worker would have started: its own session (as `setsid` gave), the client's standard streams,
working directory, arguments and environment (Prefect's settings and logging rebuilt from it),
then `prefect.engine` run as `__main__`, exiting through the interpreter's normal shutdown.

Started beside the worker by `scheduler.local_prefect.process_worker`, which binds the socket and
hands it over (`--listen-fd`): runs submitted before this process is ready wait in the backlog,
none fall back. It stops on SIGTERM / SIGINT or when `--parent` ends; runs in flight go on (each
child has its own session). Module state is the worker's environment at start: a process pool
whose job variables change settings that our modules read at import would need the worker
restarted. Code changed in place (a deploy by `git pull`) is noticed: the flow file is executed
afresh by every run, the modules it imports are the server's, so once any of the project's files
it loaded changes the server forks no more and runs start afresh, with the new code, until the
worker restarts (`CodeSnapshot`).

What a child does not take from its request, since an interpreter reads it only as it starts:
`PYTHONHASHSEED`, `PYTHONPATH` beyond `sys.path[0]`, `PYTHONUNBUFFERED` and the other `PYTHON*`
start-up settings follow the server's environment (the worker's, which set-ups share). If the
server dies, runs in flight go on; their commands wait for them and exit 1 (status unknown), and
new runs start fresh (`scheduler.forkserver_client`).

Protocol: see `scheduler.forkserver_client`.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import os
import runpy
import select
import selectors
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

#: What every child needs, imported once here: `python -m prefect.engine` and what its
#: `__main__` block imports, the flow module (its imports: the ORM, Pillow...; its warm-up), and
#: every block class a job can name (`blocks.shipped`: generators, storage, email and Slack
#: exports; ~0.1 s once, here), which a fresh interpreter imports only when a run names it.
PRELOAD = (
    "prefect.engine",
    "prefect.flow_engine",
    "prefect._internal.metrics",
    "flows.scheduled_job",
    "blocks.shipped",
)
#: The module each child runs as `__main__`.
ENGINE_MODULE = "prefect.engine"
#: A request larger than this is refused (an environment is a few kB).
MAX_REQUEST_BYTES = 4 * 1024 * 1024
#: A connected client must send its request within this time (it sends it whole as it
#: connects; the server reads one request at a time, so a stalled client delays the others).
REQUEST_TIMEOUT_S = 5.0
#: Signals held back from the moment of a fork until the child has its own handlers (the
#: server's would otherwise run in it: a SIGTERM sent to a just-forked child would be lost).
HELD_SIGNALS = frozenset(
    {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD}
)


@dataclass
class Request:
    """One flow run to start: what the client sent, and the connection it waits on."""

    argv: list[str]
    cwd: str
    env: dict[str, str]
    fds: list[int]
    conn: socket.socket
    #: The signal mask to restore in the child once its handlers are its own.
    sigmask: set[signal.Signals | int] = field(default_factory=set)

    def close_fds(self) -> None:
        """Close the client's streams here (the child has its copies, or there is none)."""
        for fd in self.fds:
            os.close(fd)


@dataclass(frozen=True)
class CodeSnapshot:
    """The project's own source files this server has loaded, as they were when it did.

    A child runs the deployment's flow file afresh (Prefect loads the entrypoint) but every
    module it imports as the server loaded it: after a deploy that changed the project's code
    in place, a forked run would mix new and old modules (a name the new flow file imports
    from an old module fails every run). So a server whose code changed forks no more: its
    clients start their engines afresh, with the new code, until the worker restarts it.
    Installed packages are not watched (a `pip install` needs the worker restarted, as before).
    """

    #: (path, st_mtime_ns, st_size) of every loaded module's file in the project.
    files: tuple[tuple[str, int, int], ...]

    @classmethod
    def of_loaded_modules(cls) -> CodeSnapshot:
        """The project's files of the modules imported now (55 here: 0.06 ms to check)."""
        from config.settings import PROJECT_ROOT

        files = []
        for module in list(sys.modules.values()):
            path = getattr(module, "__file__", None)
            # The project's `.venv` lies under its root: installed packages are left out.
            if path and Path(path).is_relative_to(PROJECT_ROOT) and "site-packages" not in path:
                with contextlib.suppress(OSError):
                    info = os.stat(path)
                    files.append((path, info.st_mtime_ns, info.st_size))
        return cls(files=tuple(sorted(files)))

    def changed(self) -> str | None:
        """The first file that changed or went away since the snapshot, or None."""
        for path, mtime_ns, size in self.files:
            try:
                info = os.stat(path)
            except OSError:
                return path
            if (info.st_mtime_ns, info.st_size) != (mtime_ns, size):
                return path
        return None


@dataclass
class _State:
    children: dict[int, socket.socket | None] = field(default_factory=dict)
    stopping: bool = False
    #: The code this server loaded (None: not watched).
    code: CodeSnapshot | None = None
    #: Set once the code changed: every later request is answered with it.
    stale: str | None = None


def read_request(conn: socket.socket) -> Request:
    """Read one request frame and its three file descriptors from `conn`.

    The descriptors are closed again whatever goes wrong after they arrived.

    Raises:
        ValueError: the frame is malformed (not JSON of the documented shape, too large,
            truncated) or did not carry three descriptors.
        OSError: the connection failed or timed out.
    """
    data, fds, _flags, _addr = socket.recv_fds(conn, 65536, 3)
    try:
        if len(fds) != 3:
            raise ValueError(f"expected 3 file descriptors (stdin, stdout, stderr), got {len(fds)}")
        if len(data) < 4:
            raise ValueError("truncated request")
        (size,) = struct.unpack(">I", data[:4])
        if size > MAX_REQUEST_BYTES:
            raise ValueError(f"request of {size} bytes (at most {MAX_REQUEST_BYTES})")
        body = bytearray(data[4:])
        while len(body) < size:
            chunk = conn.recv(min(65536, size - len(body)))
            if not chunk:
                raise ValueError("truncated request")
            body += chunk
        try:
            message = json.loads(bytes(body))
        except RecursionError:  # deeply nested JSON; json's own errors are ValueErrors
            raise ValueError("request is not JSON of the documented shape") from None
        if not isinstance(message, dict) or not {"argv", "cwd", "env"} <= message.keys():
            raise ValueError("request must be a JSON object with argv, cwd and env")
        argv, cwd, env = message["argv"], message["cwd"], message["env"]
        if not (
            isinstance(argv, list)
            and all(isinstance(a, str) for a in argv)
            and isinstance(cwd, str)
            and isinstance(env, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
        ):
            raise ValueError("argv must be a list of strings, cwd a string, env a string map")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return Request(argv=argv, cwd=cwd, env=env, fds=fds, conn=conn)


def _check_peer(conn: socket.socket) -> None:
    """Only this user's processes may ask for a child (it runs as this user, with their
    environment); the socket's folder is private too (`process_worker`)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    if uid != os.getuid():
        raise ValueError(f"connection from uid {uid}, not this server's user")


def _send(conn: socket.socket, message: dict[str, object]) -> None:
    with contextlib.suppress(OSError):  # the client is gone: nothing to tell
        conn.sendall(json.dumps(message).encode() + b"\n")


def preload(modules: tuple[str, ...]) -> None:
    """Import `modules` now, so that no child pays for them."""
    for name in modules:
        importlib.import_module(name)
    # Everything imported lives as long as the server: out of the collector's sight, the pages
    # holding it are not written by a child's collections, so they stay shared (copy-on-write).
    gc.freeze()


def serve(
    listener: socket.socket,
    parent: int | None,
    log: object = None,
    code: CodeSnapshot | None = None,
) -> Request | None:
    """Accept requests on `listener` and fork a child for each, until stopped.

    With `code`, a request that arrives once the project's code has changed is refused (see
    `CodeSnapshot`): its client starts the engine afresh.

    Returns None in the server when it stops (SIGTERM, SIGINT, or `parent` ended), and the
    child's `Request` in each child, which the caller then runs (`run_child`).
    """
    state = _State(code=code)
    selector = selectors.DefaultSelector()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)

    def stop(signum: int, frame: FrameType | None) -> None:
        state.stopping = True

    previous_wakeup = signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(wake_r, selectors.EVENT_READ, "signal")
    parent_fd: int | None = None
    if parent is not None:
        try:
            parent_fd = os.pidfd_open(parent)
            selector.register(parent_fd, selectors.EVENT_READ, "parent")
        except ProcessLookupError:
            state.stopping = True
    server_pid = os.getpid()
    try:
        while not state.stopping:
            for key, _events in selector.select():
                if key.data == "accept":
                    request = _accept(listener, selector, state)
                    if request is not None:  # this is the child
                        return request
                elif key.data == "signal":
                    with contextlib.suppress(BlockingIOError):
                        while os.read(wake_r, 512):
                            pass
                    _reap(selector, state)
                elif key.data == "parent":
                    state.stopping = True
                elif state.children.get(key.data) is key.fileobj:
                    # A client's connection: readable means it went away. (Not if its child
                    # was reaped earlier in this same batch: that closed the connection.)
                    _client_gone(key.fileobj, key.data, selector, state)
        return None
    finally:
        if os.getpid() == server_pid:
            signal.set_wakeup_fd(previous_wakeup)
        # In a child these are the server's: closed, so the child holds none of them.
        selector.close()
        os.close(wake_r)
        os.close(wake_w)
        if parent_fd is not None:
            os.close(parent_fd)
        for conn in state.children.values():
            if conn is not None:
                conn.close()


def _accept(
    listener: socket.socket, selector: selectors.BaseSelector, state: _State
) -> Request | None:
    try:
        conn, _addr = listener.accept()
    except BlockingIOError:  # pragma: no cover - another wake-up took it
        return None
    conn.settimeout(REQUEST_TIMEOUT_S)
    try:
        _check_peer(conn)
        request = read_request(conn)
    except Exception as exc:  # whatever a client sends, the server goes on serving the others
        _send(conn, {"error": f"bad request: {exc}"})
        conn.close()
        return None
    if not _still_connected(conn):
        # The client gave up waiting (it then starts the engine itself): no second process.
        request.close_fds()
        conn.close()
        return None
    if state.stale is None and state.code is not None and (path := state.code.changed()):
        state.stale = path
        print(
            f"the project's code changed since this fork server started ({path}): runs start "
            "afresh from now on; restart the worker to fork them again",
            flush=True,
        )
    if state.stale is not None:
        request.close_fds()
        _send(
            conn, {"error": f"the project's code changed since the server started: {state.stale}"}
        )
        conn.close()
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    # Held from before the fork until the child has set its own handlers (`run_child`).
    request.sigmask = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
    try:
        pid = os.fork()
    except OSError as exc:  # out of processes or memory: the client runs the engine itself
        signal.pthread_sigmask(signal.SIG_SETMASK, request.sigmask)
        request.close_fds()
        _send(conn, {"error": f"fork failed: {exc}"})
        conn.close()
        print(f"fork failed for {_flow_run_of(request)}: {exc}", flush=True)
        return None
    if pid == 0:
        signal.set_wakeup_fd(-1)
        listener.close()
        return request
    signal.pthread_sigmask(signal.SIG_SETMASK, request.sigmask)
    request.close_fds()
    _send(conn, {"pid": pid})
    state.children[pid] = conn
    conn.setblocking(False)
    selector.register(conn, selectors.EVENT_READ, pid)
    print(f"forked flow-run process {pid} for {_flow_run_of(request)}", flush=True)
    return None


def _still_connected(conn: socket.socket) -> bool:
    """Whether the client still waits: it sends nothing after its request, so a readable
    connection here has reached its end (or failed)."""
    readable, _, _ = select.select([conn], [], [], 0)
    if not readable:
        return True
    try:
        return conn.recv(1, socket.MSG_PEEK) != b""
    except OSError:
        return False


def _flow_run_of(request: Request) -> str:
    return (
        request.argv[1] if len(request.argv) > 1 else request.env.get("PREFECT__FLOW_RUN_ID", "?")
    )


def _reap(selector: selectors.BaseSelector, state: _State) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = state.children.pop(pid, None)
        print(f"flow-run process {pid}: exit {os.waitstatus_to_exitcode(status)}", flush=True)
        if conn is not None:
            selector.unregister(conn)
            conn.setblocking(True)
            _send(conn, {"status": status})
            conn.close()


def _client_gone(
    conn: socket.socket, pid: int, selector: selectors.BaseSelector, state: _State
) -> None:
    try:
        if conn.recv(1):
            return  # the protocol has the client send nothing more; ignore it
    except BlockingIOError:
        return
    except OSError:
        pass
    # The command the worker started is gone (killed, as a worker's hard kill does): the run's
    # process must not outlive it, as it would not have had it been that process itself.
    selector.unregister(conn)
    conn.close()
    state.children[pid] = None
    # The child calls setsid first thing; until it has, its group is not its own.
    for kill in (os.killpg, os.kill):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(pid, signal.SIGKILL)
    print(f"flow-run process {pid}: its command ended first; killed", flush=True)


def run_child(request: Request, module: str = ENGINE_MODULE) -> None:
    """In a forked child: become the flow-run process `request` describes and run `module`.

    Returns or raises as `python -m <module>` would (SystemExit with its exit code); the
    caller lets that reach the interpreter, whose normal shutdown (threads, atexit) follows.
    """
    for signum in HELD_SIGNALS - {signal.SIGINT}:
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.setsid()
    # Held since before the fork (`_accept`): one sent meanwhile (the worker cancelling the
    # run) is delivered now, to these handlers, as it would be to a fresh process.
    signal.pthread_sigmask(signal.SIG_SETMASK, request.sigmask)
    for target, fd in enumerate(request.fds):
        os.dup2(fd, target)
        if fd > 2:
            os.close(fd)
    request.conn.close()
    os.chdir(request.cwd)
    os.environ.clear()
    os.environ.update(request.env)
    time.tzset()
    sys.argv = list(request.argv)
    # `python -m` puts the working directory first on the path: the flow file's folder is
    # found as it would be in a fresh interpreter.
    sys.path[0] = request.cwd
    _rebuild_settings()
    # As in a fresh `python -m`, the module runs as `__main__` only (its imports stay loaded):
    # left in sys.modules, runpy would warn on every run's stderr that it was imported first.
    sys.modules.pop(module, None)
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def _rebuild_settings() -> None:
    """Settings built at import from the server's environment, rebuilt from the run's."""
    from config.settings import get_settings

    get_settings.cache_clear()
    if "prefect.context" in sys.modules:
        from prefect.context import refresh_global_settings_context
        from prefect.logging.configuration import setup_logging

        refresh_global_settings_context()
        setup_logging(incremental=False)
    if "flows" in sys.modules:
        # Importing `flows` made the console handlers of the day survive a worker that dies
        # (flows/console_output.py); logging was just set up anew, with new handlers.
        from flows.console_output import tolerate_lost_console

        tolerate_lost_console()


def main(argv: list[str] | None = None) -> int:
    """`python -m scheduler.forkserver --listen-fd N [--parent PID] [--preload M ...]`."""
    parser = argparse.ArgumentParser(prog="python -m scheduler.forkserver")
    parser.add_argument("--listen-fd", type=int, required=True, help="a listening Unix socket")
    parser.add_argument("--parent", type=int, help="stop when this process ends")
    parser.add_argument(
        "--preload", nargs="*", default=list(PRELOAD), help="modules to import up front"
    )
    parser.add_argument("--module", default=ENGINE_MODULE, help="what each child runs")
    args = parser.parse_args(argv)
    listener = socket.socket(fileno=args.listen_fd)
    started = time.monotonic()
    preload(tuple(args.preload))
    code = CodeSnapshot.of_loaded_modules()
    print(
        f"fork server ready: {len(args.preload)} modules in {time.monotonic() - started:.2f} s",
        flush=True,
    )
    request = serve(listener, args.parent, code=code)
    if request is None:
        listener.close()
        print("fork server stopped", flush=True)
        return 0
    run_child(request, args.module)
    return 0


if __name__ == "__main__":
    sys.exit(main())
