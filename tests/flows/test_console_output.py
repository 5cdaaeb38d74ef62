"""A Prefect console handler whose reader is gone: the logging call neither raises nor exits."""

from __future__ import annotations

import logging
import os

from prefect.logging.handlers import PrefectConsoleHandler

from flows.console_output import tolerate_lost_console


def test_a_console_whose_reader_is_gone_discards_output_instead_of_exiting() -> None:
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w")
    handler = PrefectConsoleHandler(stream=stream)
    logger = logging.getLogger(f"{__name__}.lost")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        assert tolerate_lost_console() >= 1
        logger.warning("read")
        assert os.read(read_end, 1000).decode().rstrip().endswith("read")
        os.close(read_end)  # the worker that read the pipe died

        # rich alone raises SystemExit(1) here, from inside the logging call.
        logger.warning("nobody reads this")
        logger.warning("nor this")

        assert handler.console.quiet
        # The broken stream now leads to /dev/null: a later write by anyone is not an error.
        assert os.path.samefile(f"/proc/self/fd/{stream.fileno()}", os.devnull)
        stream.write("still fine\n")
        stream.flush()
    finally:
        logger.removeHandler(handler)
        stream.close()
