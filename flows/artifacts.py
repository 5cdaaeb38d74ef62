"""The run artifact: a table of the ads a run made, with thumbnails where storage gives a URL.

Names, headlines and error messages are data: every cell goes through `domain.text`, so a `|`
or a newline cannot break the table and no markup in a name is rendered.
"""

from __future__ import annotations

from prefect.artifacts import acreate_markdown_artifact

from domain import text as medium
from flows.pipeline import PipelineResult

THUMBNAIL_WIDTH = 120


def render_run_markdown(title: str, result: PipelineResult) -> str:
    """Markdown for the run's ads: one row per template, thumbnails or file paths."""
    lines = [
        f"## Ads made: {medium.markdown_heading_text(title)}",
        "",
        "| Template | Status | Ads |",
        "| --- | --- | --- |",
    ]
    for outcome in result.outcomes:
        if outcome.ok:
            cells = []
            for ad in outcome.ads:
                label = medium.markdown_cell(ad.headline or ad.storage_path)
                if ad.url:
                    url = medium.markdown_cell(ad.url, limit=len(ad.url))
                    cells.append(
                        f'<a href="{url}"><img src="{url}" width="{THUMBNAIL_WIDTH}" '
                        f'alt="{label}"></a>'
                    )
                else:
                    cells.append(medium.markdown_code_cell(ad.storage_path))
            status = "✅ completed"
        else:
            cells = [medium.markdown_cell(outcome.error or "failed")]
            status = "❌ failed"
        lines.append(
            f"| {medium.markdown_code_cell(outcome.template)} | {status} | {' '.join(cells)} |"
        )
    total = sum(len(o.ads) for o in result.outcomes)
    lines += ["", f"{total} ads from {len(result.outcomes)} templates."]
    return "\n".join(lines)


async def publish_run_artifact(title: str, result: PipelineResult) -> None:
    """Attach the ads table to the current flow run."""
    await acreate_markdown_artifact(
        markdown=render_run_markdown(title, result),
        key="ads-made",
        description=f"Ads made by {medium.single_line(title)}",
    )
