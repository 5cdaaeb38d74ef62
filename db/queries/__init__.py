"""Queries that carry real semantics (claims, the run mirror, deliveries)."""
