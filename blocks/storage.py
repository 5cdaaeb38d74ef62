"""Template and ad storage on Prefect filesystem blocks.

`AdStorage` wraps a Prefect `LocalFileSystem` (the embedded default, a folder) or
`RemoteFileSystem` (S3, GCS, … through fsspec) and adds the two things the flows need beyond
read/write: listing what is stored (to catalog templates) and a URL a person's browser or mail
client can load (for thumbnails in artifacts, email and Slack), when the storage can give one.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path, PurePosixPath

from prefect.blocks.core import Block
from prefect.filesystems import LocalFileSystem, RemoteFileSystem
from pydantic import Field

from config import get_settings
from domain.vocab import ADS_FOLDER, TEMPLATE_SUFFIXES, TEMPLATES_FOLDER


class AdStorage(Block):
    """Where templates are read from and generated ads are written to.

    Attributes:
        filesystem: The Prefect filesystem block holding the files.
        templates_prefix: Folder (key prefix) of the template library.
        ads_prefix: Folder (key prefix) of generated ads.
        public_base_url: Base URL under which stored paths are publicly readable (a CDN or a
            public bucket); None when files are not reachable by URL.

    Example:
        ```python
        from blocks.storage import AdStorage
        storage = AdStorage.load("BLOCK_NAME")
        ```
    """

    _block_type_name = "Ad Storage"
    _block_type_slug = "ad-storage"
    _documentation_url = "https://docs.prefect.io/v3/develop/blocks"  # type: ignore[assignment]

    filesystem: LocalFileSystem | RemoteFileSystem = Field(
        description="Prefect filesystem block that holds templates and ads."
    )
    templates_prefix: str = Field(default=TEMPLATES_FOLDER, description="Folder of the templates.")
    ads_prefix: str = Field(default=ADS_FOLDER, description="Folder of generated ads.")
    public_base_url: str | None = Field(
        default=None, description="Base URL under which stored files are publicly readable."
    )

    def template_path(self, storage_name: str) -> str:
        """Storage path of a template."""
        return str(PurePosixPath(self.templates_prefix) / storage_name)

    def ad_path(self, tenant_id: object, ad_run_id: object, index: int, extension: str) -> str:
        """Storage path of one generated ad."""
        return str(
            PurePosixPath(self.ads_prefix)
            / str(tenant_id)
            / str(ad_run_id)
            / f"variation-{index + 1}.{extension}"
        )

    async def read(self, path: str) -> bytes:
        """Read a stored file."""
        return await self.filesystem.aread_path(path)

    async def write(self, path: str, data: bytes) -> str:
        """Write a file; returns the path the filesystem stored it under."""
        return await self.filesystem.awrite_path(path, data)

    async def delete_file(self, path: str) -> None:
        """Delete a stored file (used to clean up ads whose rows were never written).

        A file that is already gone is not an error.
        """
        await asyncio.to_thread(self._delete, path)

    def _delete(self, path: str) -> None:
        local = self.local_path(path)
        if local is not None:
            local.unlink(missing_ok=True)
            return
        assert isinstance(self.filesystem, RemoteFileSystem)
        try:
            self.filesystem.filesystem.rm(f"{self.filesystem.basepath.rstrip('/')}/{path}")
        except FileNotFoundError:
            pass

    def local_path(self, path: str) -> Path | None:
        """The file's path on this machine, for local storage; None for remote storage."""
        if isinstance(self.filesystem, LocalFileSystem):
            base = Path(self.filesystem.basepath or ".").expanduser()
            return (base / path).resolve()
        return None

    async def list_files(self, prefix: str) -> list[str]:
        """Paths (relative to the storage root) of the files under `prefix`, sorted."""
        # Listing walks a directory tree or a bucket: keep it off the event loop.
        return await asyncio.to_thread(self._list_files, prefix)

    def _list_files(self, prefix: str) -> list[str]:
        if isinstance(self.filesystem, LocalFileSystem):
            base = Path(self.filesystem.basepath or ".").expanduser().resolve()
            found: list[str] = []
            for dirpath, _dirs, files in os.walk(base / prefix):
                found.extend(Path(dirpath, name).relative_to(base).as_posix() for name in files)
            return sorted(found)
        fs = self.filesystem.filesystem
        remote_root = f"{self.filesystem.basepath.rstrip('/')}/{prefix}"
        remote_base = self.filesystem.basepath.split("://", 1)[-1].rstrip("/")
        return sorted(str(p)[len(remote_base) + 1 :] for p in fs.find(remote_root))

    async def list_templates(self) -> list[str]:
        """Storage names (relative to the templates folder) of every template image."""
        prefix = self.templates_prefix.rstrip("/") + "/"
        return [
            path[len(prefix) :]
            for path in await self.list_files(self.templates_prefix)
            if path.lower().endswith(TEMPLATE_SUFFIXES)
        ]

    def public_url(self, path: str) -> str | None:
        """A URL a browser can load for `path`, or None when the storage cannot give one."""
        if self.public_base_url:
            return f"{self.public_base_url.rstrip('/')}/{path}"
        return None


def default_storage() -> AdStorage:
    """The embedded default: a local folder under the data directory."""
    basepath = get_settings().data_dir / "storage"
    basepath.mkdir(parents=True, exist_ok=True)
    return AdStorage(filesystem=LocalFileSystem(basepath=str(basepath)))


async def load_storage(block_name: str | None = None) -> AdStorage:
    """The storage block named `block_name` (or `AD_SCHEDULER_STORAGE_BLOCK`), else the default."""
    name = block_name or get_settings().storage_block
    if name:
        return await AdStorage.aload(name)
    return default_storage()
