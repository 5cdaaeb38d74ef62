"""The migrated databases accept the factories' rows on both backends."""

from sqlalchemy import select, text

from db.models import Product
from db.session import session_scope
from tests.support.factories import make_job, make_product


async def test_factories_write_rows_on_both_backends(db_url: str, tenant_id) -> None:
    async with session_scope(db_url) as session:
        product = await make_product(session, tenant_id)
        job = await make_job(session, tenant_id, product)
    async with session_scope(db_url) as session:
        got = await session.scalar(select(Product).where(Product.id == product.id))
        assert got is not None and got.key_benefits == ["Grips wet rock", "Weighs 240 g"]
        rows = (
            await session.execute(
                text("SELECT name, runs_completed FROM v_active_scheduled_jobs WHERE id = :id"),
                {"id": job.id if db_url.startswith("postgresql") else job.id.hex},
            )
        ).all()
        assert [tuple(r) for r in rows] == [(job.name, 0)]
