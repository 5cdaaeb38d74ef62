"""Templates uploaded with a job: read and checked before any write, stored content-addressed."""

from __future__ import annotations

import hashlib
import io
import uuid
from dataclasses import dataclass
from pathlib import Path

from db.driver import AsyncSession
from db.models import AdTemplate
from db.queries.jobs import existing_storage_names
from domain.errors import InvalidJobSpec
from domain.vocab import UPLOADS_FOLDER
from scheduler.errors import StorageError

#: Folder of template storage that uploaded templates go to.
UPLOAD_PREFIX = UPLOADS_FOLDER


@dataclass(frozen=True)
class Upload:
    """One uploaded image, read and measured.

    Attributes:
        storage_name: `uploads/<sha256 prefix><suffix>`: the same file is the same template.
        data: The file's bytes.
        width: Pixels.
        height: Pixels.
        original: The file's own name (the template's display name).
    """

    storage_name: str
    data: bytes
    width: int
    height: int
    original: str


def read_upload(index: int, path: Path) -> Upload:
    """Read one uploaded template image.

    Raises:
        InvalidJobSpec: `templates.files.<index>` cannot be read or is not an image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidJobSpec.one(
            f"templates.files.{index}", f"{path.name} cannot be read ({exc.strerror})"
        ) from exc
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError) as exc:
        raise InvalidJobSpec.one(
            f"templates.files.{index}", f"{path.name} is not a readable image (png, jpg, webp)"
        ) from exc
    digest = hashlib.sha256(data).hexdigest()[:20]
    return Upload(f"{UPLOAD_PREFIX}/{digest}{path.suffix.lower()}", data, width, height, path.name)


async def store_uploads(
    session: AsyncSession, tenant_id: uuid.UUID, brand_id: uuid.UUID, uploads: list[Upload]
) -> None:
    """Write the files to template storage and catalog the new ones under the brand.

    Raises:
        StorageError: Template storage refused a write.
    """
    if not uploads:
        return
    from blocks.storage import load_storage

    storage = await load_storage()
    existing = await existing_storage_names(session, tenant_id, [u.storage_name for u in uploads])
    for upload in uploads:
        # Content-addressed names: writing the same file again is harmless (idempotent).
        try:
            await storage.write(storage.template_path(upload.storage_name), upload.data)
        except (OSError, ValueError) as exc:
            raise StorageError(
                f"could not store the uploaded template {upload.original} "
                f"({type(exc).__name__}); check the template storage block or "
                "AD_SCHEDULER_DATA_DIR"
            ) from exc
        if upload.storage_name not in existing:
            existing.add(upload.storage_name)
            session.add(
                AdTemplate(
                    tenant_id=tenant_id,
                    storage_name=upload.storage_name,
                    brand_id=brand_id,
                    name=upload.original,
                    width=upload.width,
                    height=upload.height,
                    source="uploaded",
                )
            )
