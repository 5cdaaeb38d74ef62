"""Catalog writes raise the project's own errors, and leave nothing behind on bad input."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from db.errors import ConflictError, NotFoundError
from db.models import AdTemplate
from db.queries.catalog import add_template
from db.session import session_scope
from tests.support.factories import make_brand


async def test_duplicate_storage_name_is_a_conflict(db_url, tenant_id) -> None:
    async with session_scope(db_url) as s:
        await add_template(s, tenant_id=tenant_id, storage_name="a.png", width=10, height=10)
    async with session_scope(db_url) as s:
        with pytest.raises(ConflictError, match="storage_name='a.png' already exists"):
            await add_template(s, tenant_id=tenant_id, storage_name="a.png", width=10, height=10)
        # Another tenant may use the same name.
        await add_template(s, tenant_id=uuid.uuid4(), storage_name="a.png", width=10, height=10)
    async with session_scope(db_url) as s:
        count = await s.scalar(sa.select(sa.func.count()).where(AdTemplate.tenant_id == tenant_id))
    assert count == 1


async def test_brand_of_another_tenant_and_bad_size_are_refused(db_url, tenant_id) -> None:
    async with session_scope(db_url) as s:
        theirs = await make_brand(s, uuid.uuid4())
    async with session_scope(db_url) as s:
        with pytest.raises(NotFoundError, match=f"brand {theirs.id} not found"):
            await add_template(
                s, tenant_id=tenant_id, storage_name="b.png", width=1, height=1, brand_id=theirs.id
            )
        with pytest.raises(ValueError, match="must be positive"):
            await add_template(s, tenant_id=tenant_id, storage_name="c.png", width=0, height=1)
    async with session_scope(db_url) as s:
        assert (
            await s.scalar(sa.select(sa.func.count()).where(AdTemplate.tenant_id == tenant_id)) == 0
        )
