"""A run of a job in the Prefect UI: its page lists the kinds of task the run is made of, and a
deployment's Run form shows its parameters as fields (the helper the job forms reuse)."""

from __future__ import annotations

import re
import uuid

import pytest

from blocks.storage import default_storage
from db.session import session_scope
from domain.params import AdParameters, ExportSettings, JobParameters
from flows.sample_data import seed_sample_data
from flows.scheduled_job import run_scheduled_job
from tests.support.factories import make_job
from tests.support.task_runs import final_task_runs
from tests.ui.browser import assert_form_shows_fields, flow_run_url, open_page, wait_for_text

pytestmark = pytest.mark.usefixtures("ui_url", "data_dir")

#: The kinds of task a job's run is made of, as the run page names their task runs (all four
#: pass since flowshape's task names reached main).
TASK_KINDS = {
    "select-templates": re.compile(r"\bselect[- ]templates", re.I),
    "generate-ad-run": re.compile(r"\bgenerate\b", re.I),
    "record-template-usage": re.compile(r"\brecord[- ](template[- ])?usage", re.I),
    "export": re.compile(r"\bexport\b", re.I),
}


@pytest.fixture(scope="module")
def run_page_text() -> dict[str, str]:
    """The task-run list of one real run, read once for every kind (filled by the first test)."""
    return {}


async def _task_runs_text(ui_url: str, browser, tenant_id: uuid.UUID) -> str:
    storage = default_storage()
    _brand, product, _ = await seed_sample_data(tenant_id, storage, templates=4)
    params = JobParameters(
        ad=AdParameters(variations=1),
        # A block that does not exist: the export task still runs (and fails), ads are kept.
        export=ExportSettings(destination="slack", slack_webhook_block="no-such-slack-block"),
    ).model_dump(mode="json")
    async with session_scope() as session:
        job = await make_job(session, tenant_id, product, template_count=2, parameters=params)
    state = await run_scheduled_job(job.id, return_state=True)
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    # Task runs reach the server through events, after the flow returns: the run page lists
    # what the server has when it loads, so wait until the server has them all.
    # select, 2 generations, at least one usage record, 2 exports
    await final_task_runs(flow_run_id, at_least=6)
    page = await open_page(browser, flow_run_url(ui_url, flow_run_id))
    try:
        # The UI's tabs are buttons without a tab role: found by their text.
        await page.get_by_text("Task Runs", exact=True).first.click()
        # The list is loaded once both ad runs are in it.
        await wait_for_text(page, "generate sample-0")
        items = await page.eval_on_selector_all(
            ".task-run-list-item", "els => els.map(e => e.innerText)"
        )
        return "\n".join(items)
    finally:
        await page.close()


@pytest.mark.parametrize("kind", list(TASK_KINDS))
async def test_run_page_lists_the_kind_of_task(
    kind: str, sqlite_app: str, tenant_id: uuid.UUID, ui_url: str, browser, run_page_text
) -> None:
    if "text" not in run_page_text:
        run_page_text["text"] = await _task_runs_text(ui_url, browser, tenant_id)
    text = run_page_text["text"]
    assert TASK_KINDS[kind].search(text), f"no {kind} task run on the run page:\n{text[:3000]}"


async def test_run_form_shows_the_flow_parameters_as_fields(ui_url: str, browser) -> None:
    deployment = await run_scheduled_job.ato_deployment(  # type: ignore[attr-defined]
        name=f"form-{uuid.uuid4().hex[:6]}"
    )
    deployment_id = await deployment.aapply()
    labels = await assert_form_shows_fields(browser, ui_url, deployment_id, ["job_id"])
    assert labels
