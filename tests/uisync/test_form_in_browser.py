"""The `save-job` form in a real browser: headless Debian chromium (driven by Playwright, pointed
at /usr/bin/chromium; nothing downloads a browser) opens the deployment's Run → Custom run page of
a Prefect server with its UI, and the form shows the job spec's fields with their dropdowns.

Mandatory under CI=true; skipped elsewhere without chromium or Playwright."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.settings import PROJECT_ROOT
from flows import deployment_sync as dep
from scheduler.local_prefect import background_process, free_port, prefect_env, wait_healthy
from tests.conftest import IN_CI, require_postgres
from tests.support.databases import scratch_pg_database
from tests.support.prefect_server import FAST_SERVICES

PAGE_TIMEOUT_S = 90
#: Field titles the form must show (pydantic titles: `Field(title=...)` or the name title-cased).
FORM_FIELDS = (
    "Name",
    "Product",
    "Kind",
    "Cron",
    "Time zone",
    "Max Runs",
    "When none are left",
    "Headlines from",
    "Colours",
    "Destination",
    "Slack Webhook Block",
    "Overlap",
)


def _browser_or_skip() -> None:
    problem = None
    try:
        from tests.ui.browser import CHROMIUM, chromium_available
    except ImportError:
        problem = "Playwright is not installed (it is in the dev dependencies)"
    else:
        if not chromium_available():
            problem = f"no chromium at {CHROMIUM} (apt-get install -y chromium)"
    if problem and IN_CI:
        pytest.fail(f"CI=true but {problem}: the browser test is mandatory")
    if problem:
        pytest.skip(f"browser test skipped: {problem}")


@pytest.fixture(scope="module")
def ui_server(postgres_available: bool) -> Iterator[str]:
    """A Prefect server with its UI on 127.0.0.1 (the UI told its own API address); its URL."""
    require_postgres(postgres_available)
    _browser_or_skip()
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    with (
        scratch_pg_database("adsched_prefect_form_ui") as database_url,
        tempfile.TemporaryDirectory(prefix="prefect-home-") as home,
    ):
        env = prefect_env(
            Path(home),
            database_url=database_url,
            extra={
                **FAST_SERVICES,
                "PREFECT_SERVER_UI_ENABLED": "true",
                # Without it the UI calls port 4200 ("Can't connect to Server API").
                "PREFECT_UI_API_URL": api,
            },
        )
        args = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
        log = Path(home) / "server.log"
        with background_process([*args, "--port", str(port)], env, log) as proc:
            wait_healthy(api, proc, log)
            yield api


def _deploy_save_job(api: str) -> str:
    env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_CLI_PROMPT": "false"}
    for args in (
        ["work-pool", "create", dep.DEFAULT_WORK_POOL, "--type", "process", "--overwrite"],
        ["--no-prompt", "deploy", "--name", "save-job/ad-scheduler"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "prefect", *args],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    import httpx

    return str(httpx.get(f"{api}/deployments/name/save-job/ad-scheduler").json()["id"])


# Deploys with the CLI and starts processes: minutes on a loaded shared machine.
@pytest.mark.timeout(900)
async def test_the_save_job_form_shows_the_job_spec_in_chromium(ui_server: str) -> None:
    from tests.ui.browser import chromium, open_page

    deployment_id = _deploy_save_job(ui_server)
    url = f"{ui_server.removesuffix('/api')}/deployments/deployment/{deployment_id}/run"
    async with chromium() as context:
        page = await open_page(context, url)
        deadline = time.monotonic() + PAGE_TIMEOUT_S
        labels: list[str] = []
        while time.monotonic() < deadline:
            labels = [
                " ".join(t.split())
                for t in await page.eval_on_selector_all(
                    "form label, form legend", "els => els.map(e => e.innerText)"
                )
            ]
            if all(any(f in label for label in labels) for f in FORM_FIELDS):
                break
            await page.wait_for_timeout(250)  # polling the DOM, with a deadline
        missing = [f for f in FORM_FIELDS if not any(f in label for label in labels)]
        assert not missing, f"form fields missing: {missing}; the form shows {labels}"
        body = await page.inner_text("body")
        # Descriptions are shown, and choices are dropdowns showing their defaults.
        assert "The product's name (or id) the ads are made for." in body
        assert "Can't connect" not in body
        # Prefect's design system renders a dropdown as `.p-select-button` (a combobox
        # for searchable lists); each Literal of the form is one.
        selects = await page.eval_on_selector_all(
            "form .p-select-button, form .p-combobox, form select", "els => els.length"
        )
        assert selects >= 10, f"only {selects} dropdowns in the form"
        for default in ("recurring", "UTC", "recycle", "hooks", "per_ad_run", "skip"):
            assert default in body, f"the form does not show the default {default!r}"
