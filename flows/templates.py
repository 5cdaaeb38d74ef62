"""`sync_templates`: catalog what the template storage holds."""

from __future__ import annotations

import io
import uuid

import sqlalchemy as sa
from PIL import Image
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from blocks.storage import AdStorage, load_storage
from db.models import AdTemplate
from db.queries.catalog import deactivated_by_a_person
from db.session import session_scope
from domain.vocab import UPLOADS_FOLDER

#: Folder (under the templates folder) of templates uploaded with one job.


class SyncReport(BaseModel):
    """What a catalog sync changed."""

    added: list[str]
    reactivated: list[str]
    deactivated: list[str]
    unchanged: int


async def sync_template_catalog(
    tenant_id: uuid.UUID, storage: AdStorage | None = None, brand_id: uuid.UUID | None = None
) -> SyncReport:
    """Add stored templates missing from the catalog; deactivate catalogued ones that vanished.

    A template a run set aside (missing or unreadable file, rejected by the provider) whose file
    is in storage is re-enabled: a sync is how a person says "the files are fixed".

    Only library templates are managed here; uploaded (per-job) templates are left alone.
    """
    storage = storage or await load_storage()
    # Files uploaded with a job live under uploads/ and are catalogued by the SDK, not here.
    stored = {n for n in await storage.list_templates() if not n.startswith(f"{UPLOADS_FOLDER}/")}
    async with session_scope() as session:
        taken = set(
            (
                await session.scalars(
                    sa.select(AdTemplate.storage_name).where(
                        AdTemplate.tenant_id == tenant_id, AdTemplate.source != "library"
                    )
                )
            ).all()
        )
        stored -= taken
        rows = {
            t.storage_name: t
            for t in (
                await session.scalars(
                    sa.select(AdTemplate).where(
                        AdTemplate.tenant_id == tenant_id, AdTemplate.source == "library"
                    )
                )
            ).all()
        }
        added, reactivated, deactivated = [], [], []
        for name in sorted(stored - rows.keys()):
            data = await storage.read(storage.template_path(name))
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
            stem = name.rsplit(".", 1)[0].replace("-", " ").replace("_", " ")
            session.add(
                AdTemplate(
                    tenant_id=tenant_id,
                    storage_name=name,
                    name=stem,
                    brand_id=brand_id,
                    width=width,
                    height=height,
                    source="library",
                )
            )
            added.append(name)
        for name, row in rows.items():
            if (
                name in stored
                and not row.active
                and not deactivated_by_a_person(row.inactive_reason)
            ):
                # Back in storage (or fixed after a run set it aside): in rotation again.
                row.active = True
                row.inactive_reason = None
                reactivated.append(name)
            elif name not in stored and row.active:
                row.active = False
                row.inactive_reason = "its file is no longer in template storage"
                deactivated.append(name)
    unchanged = len(stored) - len(added) - len(reactivated)
    return SyncReport(
        added=added, reactivated=reactivated, deactivated=sorted(deactivated), unchanged=unchanged
    )


@task(name="sync-templates", cache_policy=NO_CACHE)
async def sync_templates(tenant_id: uuid.UUID, brand_id: uuid.UUID | None = None) -> SyncReport:
    """Prefect task wrapper of `sync_template_catalog` on the configured storage."""
    return await sync_template_catalog(tenant_id, brand_id=brand_id)
