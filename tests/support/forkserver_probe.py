"""What a fork server's child runs in tests/scheduler/test_forkserver.py, instead of the engine.

`probe report <code>`: print what the child was given (JSON on stdout), a line on stderr, exit.
`probe wait`: print `ready`, then wait for SIGTERM and exit 7 from its handler.
`probe settings`: print Prefect's API URL as its settings see it (the server preloads Prefect).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from types import FrameType


def _terminated(signum: int, frame: FrameType | None) -> None:
    print("terminated", flush=True)
    sys.exit(7)


def main() -> int:
    mode = sys.argv[1]
    if mode == "report":
        print(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "sid": os.getsid(0),
                    "ppid": os.getppid(),
                    "cwd": os.getcwd(),
                    "argv": sys.argv[1:],
                    "value": os.environ.get("PROBE_VALUE"),
                    "stdin": sys.stdin.readline().strip(),
                    "path0": sys.path[0],
                }
            ),
            flush=True,
        )
        print("to stderr", file=sys.stderr, flush=True)
        return int(sys.argv[2])
    if mode == "wait":
        signal.signal(signal.SIGTERM, _terminated)
        print(json.dumps({"pid": os.getpid()}), flush=True)
        while True:
            signal.pause()
    if mode == "settings":
        from prefect.settings import get_current_settings

        print(get_current_settings().api.url, flush=True)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
