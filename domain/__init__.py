"""The domain layer: pure types and rules, no I/O.

The job spec (`spec`), ad parameters and export settings (`params`), the vocabularies (`vocab`),
the error base (`errors`), the job-state rules (`job_rules`), cron (`cron`, validated by the same
code Prefect schedules with), misfire grace (`misfire`) and text for each medium (`text`).
Nothing here touches a database, the network or a Prefect server; every layer above may use it.
"""
