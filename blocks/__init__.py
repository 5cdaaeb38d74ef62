"""Prefect blocks: generators, storage, email and Slack.

Load a saved block by reference with `blocks.registry.load_block` (it works in a worker's fresh
flow process); `blocks.shipped` imports every class, for `prefect block register -m`. Nothing is
imported here, so importing one block module does not import the others.
"""
