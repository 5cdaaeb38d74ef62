"""Talking to the Prefect API: a fast reachability probe and block look-ups."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import httpx

from scheduler.errors import PrefectApiError, redact_url

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

#: Seconds the SDK waits for the Prefect API to answer before saying it is unreachable (the
#: client's own retries would otherwise take ~35 s to give up).
PREFECT_PROBE_TIMEOUT = 3.0

#: What to do without a Prefect server (the command exists in every install of the project).
START_SERVER_HINT = (
    "Start a local one with `ad-scheduler up` (server, worker and reconciler; API on "
    "http://127.0.0.1:4200)"
)


async def probe_prefect_api(wait_seconds: float = PREFECT_PROBE_TIMEOUT) -> str:
    """Check that the Prefect API in `PREFECT_API_URL` answers; returns its URL.

    Raises:
        PrefectApiError: Not configured, or no healthy answer within `wait_seconds`; the
            message says what was tried and what to do.
    """
    from prefect.settings import PREFECT_API_URL

    url = (PREFECT_API_URL.value() or "").rstrip("/")
    if not url:
        raise PrefectApiError(
            "PREFECT_API_URL is not set, so there is no Prefect server to register jobs with. "
            f"{START_SERVER_HINT} and set PREFECT_API_URL=http://127.0.0.1:4200/api (or point it "
            "at your server)."
        )
    shown = redact_url(url)
    try:
        async with httpx.AsyncClient(timeout=wait_seconds) as http:
            response = await http.get(f"{url}/health")
    except httpx.HTTPError as exc:
        raise PrefectApiError(
            f"cannot reach the Prefect API at {shown} (PREFECT_API_URL): {type(exc).__name__} "
            f"within {wait_seconds:g} s. {START_SERVER_HINT}, or set PREFECT_API_URL to a "
            "running one."
        ) from exc
    if response.status_code != 200:
        raise PrefectApiError(
            f"the Prefect API at {shown} (PREFECT_API_URL) answered {response.status_code} to "
            "/health; check that PREFECT_API_URL ends in /api and the server is healthy "
            f"({START_SERVER_HINT})."
        )
    return url


async def block_exists(client: PrefectClient, slugs: Sequence[str], name: str) -> bool:
    """True when a block document `name` of one of these block types is saved."""
    from prefect.exceptions import ObjectNotFound

    for slug in slugs:
        try:
            await client.read_block_document_by_name(
                name, block_type_slug=slug, include_secrets=False
            )
        except ObjectNotFound:
            continue
        return True
    return False


def short_prefect_error(exc: BaseException) -> str:
    """One line about a Prefect client error (status and the start of the body)."""
    from prefect.exceptions import PrefectHTTPStatusError

    if isinstance(exc, PrefectHTTPStatusError):
        return f"{exc.response.status_code} {exc.response.text[:300]}"
    return f"{type(exc).__name__}: {exc}"
