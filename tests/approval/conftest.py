"""Approval tests: jobs run by a real process worker (real Prefect server, real PostgreSQL)."""

from tests.support.production import production_settings, production_worker

__all__ = ["production_settings", "production_worker"]
