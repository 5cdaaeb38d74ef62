"""Headless Chromium (Debian's package, driven by Playwright) against a real Prefect UI.

Nothing here downloads a browser: Playwright is pointed at `/usr/bin/chromium`
(`executable_path`), with a fresh profile per launch. The helpers are what the UI tests assert
with, and what the lead reuses for the job form (`form_field_labels`, `assert_form_shows_fields`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import BrowserContext, Page, async_playwright

CHROMIUM = os.environ.get("AD_SCHEDULER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: How long a page may take to show what a test waits for (the UI loads ~5 MB of script).
PAGE_TIMEOUT_S = 60


def chromium_available() -> bool:
    """Whether Debian's chromium is installed where the tests look for it."""
    return Path(CHROMIUM).is_file() or shutil.which(CHROMIUM) is not None


@asynccontextmanager
async def chromium() -> AsyncIterator[BrowserContext]:
    """A headless Chromium with a fresh user-data-dir; closed (and its profile removed) on exit."""
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        async with async_playwright() as pw:
            context = await pw.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1400, "height": 900},
            )
            context.set_default_timeout(PAGE_TIMEOUT_S * 1000)
            try:
                yield context
            finally:
                await context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


async def open_page(context: BrowserContext, url: str) -> Page:
    """A new tab on `url`, with the UI's script loaded."""
    page = await context.new_page()
    await page.goto(url, wait_until="domcontentloaded")
    return page


async def loaded_images(page: Page, selector: str = "img", *, at_least: int = 1) -> list[dict]:
    """The images matching `selector` once at least `at_least` are present and all decoded.

    Returns:
        One dict per image: `alt`, `naturalWidth`, `src` (first 40 characters).

    Raises:
        AssertionError: Fewer than `at_least` images appeared, or one failed to load
            (`naturalWidth` 0), within `PAGE_TIMEOUT_S`.
    """
    deadline = time.monotonic() + PAGE_TIMEOUT_S
    images: list[dict] = []
    while time.monotonic() < deadline:
        images = await page.eval_on_selector_all(
            selector,
            """els => els.map(i => ({alt: i.alt, complete: i.complete,
                naturalWidth: i.naturalWidth, src: (i.getAttribute('src') || '').slice(0, 40)}))""",
        )
        if len(images) >= at_least and all(i["complete"] for i in images):
            break
        await page.wait_for_timeout(250)  # polling the DOM for a condition, with a deadline
    assert len(images) >= at_least, f"expected ≥ {at_least} images, saw {len(images)}"
    broken = [i for i in images if i["naturalWidth"] == 0]
    assert not broken, f"images that did not load: {broken}"
    return images


async def wait_for_text(page: Page, *texts: str) -> str:
    """The page's visible text once it contains every one of `texts` (AssertionError if not)."""
    deadline = time.monotonic() + PAGE_TIMEOUT_S
    body = ""
    while time.monotonic() < deadline:
        body = await page.inner_text("body")
        if all(t in body for t in texts):
            return body
        await page.wait_for_timeout(250)  # polling the DOM for a condition, with a deadline
    missing = [t for t in texts if t not in body]
    raise AssertionError(f"page never showed {missing}; it showed:\n{body[:3000]}")


def artifact_url(ui_url: str, artifact_id: uuid.UUID) -> str:
    """The UI page of one artifact (version)."""
    return f"{ui_url}/artifacts/artifact/{artifact_id}"


def flow_run_url(ui_url: str, flow_run_id: uuid.UUID) -> str:
    """The UI page of one flow run."""
    return f"{ui_url}/runs/flow-run/{flow_run_id}"


def custom_run_url(ui_url: str, deployment_id: uuid.UUID) -> str:
    """A deployment's Run → Custom run form (generated from its flow's parameter schema)."""
    return f"{ui_url}/deployments/deployment/{deployment_id}/run"


async def form_field_labels(page: Page) -> list[str]:
    """The labels of every field of the form on the page (nested models included)."""
    return [
        " ".join(text.split())
        for text in await page.eval_on_selector_all(
            "form label, form legend", "els => els.map(e => e.innerText)"
        )
        if text.strip()
    ]


async def assert_form_shows_fields(
    context: BrowserContext, ui_url: str, deployment_id: uuid.UUID, fields: Iterable[str]
) -> list[str]:
    """Open a deployment's custom-run form and check that it shows a field for each title.

    Args:
        context: A browser (`chromium()`).
        ui_url: The UI's base URL (`http://127.0.0.1:<port>`).
        deployment_id: The deployment whose Run form is checked.
        fields: Field labels as the form shows them: Prefect 3.9's form labels a parameter by
            its name (`job_id`), a nested model's fields likewise; the description is shown
            under it.

    Returns:
        Every label the form showed.

    Raises:
        AssertionError: A field is missing (the message lists what the form showed).
    """
    wanted = list(fields)
    page = await open_page(context, custom_run_url(ui_url, deployment_id))
    try:
        await wait_for_text(page, *wanted)
        labels = await form_field_labels(page)
        missing = [f for f in wanted if not any(f in label for label in labels)]
        assert not missing, f"form fields missing: {missing}; the form shows {labels}"
        return labels
    finally:
        await page.close()
