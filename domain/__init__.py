"""Pure rules of the project: what a schedule is, when it fires, how text fits its medium.

Nothing here touches a database, the network or a Prefect server; every layer above may use it.
"""
