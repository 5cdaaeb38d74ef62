"""What the layers above `db` see of SQLAlchemy: the session type and the driver's errors.

`scheduler` (the SDK and the CLI) writes no SQL: its statements live in `db/queries/`, and it
imports SQLAlchemy only through this module (an import-linter contract in pyproject.toml), for
type annotations and to tell a uniqueness clash or a database failure from other errors.
"""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["AsyncSession", "IntegrityError", "SQLAlchemyError"]
