"""Prefect flows. Every flow process imports this package (its entrypoint lives here).

A flow process outlives a worker that dies: its console output then has no reader, and that must
not end or wedge the run (see `flows.console_output`).
"""

from flows.console_output import tolerate_lost_console

tolerate_lost_console()
