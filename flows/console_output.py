"""A flow process whose console reader is gone goes on with its run (and then exits).

A process worker streams each flow process's stdout and stderr through pipes it reads. When the
worker dies (SIGKILL, a service manager's stop timeout, the OOM killer), the flow process carries
on in its own session, and its next log line to the console hits a pipe nobody reads. Prefect's
console handler prints through rich, whose `Console.on_broken_pipe` answers that by pointing
*stdout* (not the stream that broke) at /dev/null and raising `SystemExit(1)` from inside the
logging call, in whichever task logged. In an async flow that exit escapes the event loop mid-run:
the run is recorded Crashed although its work went on, every later line to the still-broken
stderr raises again, the loop's teardown is cut short, and the AnyIO worker threads it would have
stopped (non-daemon) keep the interpreter from exiting. Measured: a flow process left that way
sat in `threading._shutdown` for good, its run's connections open until a hook closed them.

`tolerate_lost_console` makes a lost console what it is, nowhere to print: the stream that broke
is pointed at /dev/null and nothing is raised; the run's logs still reach the Prefect API.
"""

from __future__ import annotations

import logging
import os
from functools import partial

from prefect.logging.handlers import PrefectConsoleHandler
from rich.console import Console


def tolerate_lost_console() -> int:
    """Make every Prefect console handler of this process survive a broken pipe.

    Idempotent; call it after Prefect set up logging (importing `prefect` does).

    Returns:
        How many console handlers were found.
    """
    handlers = _console_handlers()
    for handler in handlers:
        # rich documents `on_broken_pipe` as the hook to override for this.
        handler.console.on_broken_pipe = partial(_discard_output, handler.console)  # type: ignore[method-assign]
    return len(handlers)


def _console_handlers() -> list[PrefectConsoleHandler]:
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    found: dict[int, PrefectConsoleHandler] = {}
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler):
                found[id(handler)] = handler
    return list(found.values())


def _discard_output(console: Console) -> None:
    """Point the console's own stream at /dev/null and stop rendering to it; raise nothing."""
    console.quiet = True
    try:
        fd = console.file.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file: nothing left to redirect
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)  # later writes by anyone to this stream are discarded, not errors
    finally:
        os.close(devnull)
