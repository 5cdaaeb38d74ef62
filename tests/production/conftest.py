"""Production-path tests: jobs run by a real process worker in its own processes."""

from tests.support.production import production_settings, production_worker

__all__ = ["production_settings", "production_worker"]
