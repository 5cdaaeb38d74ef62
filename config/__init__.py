"""Project configuration: one settings object, read from the environment."""

from config.settings import PROJECT_ROOT, Settings, get_settings

__all__ = ["PROJECT_ROOT", "Settings", "get_settings"]
