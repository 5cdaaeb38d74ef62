"""The run artifact: a table of the ads a run made, with thumbnails where storage gives a URL."""

from __future__ import annotations

import html

from prefect.artifacts import acreate_markdown_artifact

from flows.pipeline import PipelineResult

THUMBNAIL_WIDTH = 120


def render_run_markdown(title: str, result: PipelineResult) -> str:
    """Markdown for the run's ads: one row per template, thumbnails or file paths."""
    lines = [
        f"## Ads made: {html.escape(title)}",
        "",
        "| Template | Status | Ads |",
        "| --- | --- | --- |",
    ]
    for outcome in result.outcomes:
        if outcome.ok:
            cells = []
            for ad in outcome.ads:
                label = html.escape(ad.headline or ad.storage_path)
                if ad.url:
                    cells.append(
                        f'<a href="{html.escape(ad.url)}"><img src="{html.escape(ad.url)}" '
                        f'width="{THUMBNAIL_WIDTH}" alt="{label}"></a>'
                    )
                else:
                    cells.append(f"`{ad.storage_path}`")
            status = "✅ completed"
        else:
            cells = [html.escape(outcome.error or "failed")]
            status = "❌ failed"
        lines.append(f"| `{outcome.template}` | {status} | {' '.join(cells)} |")
    total = sum(len(o.ads) for o in result.outcomes)
    lines += ["", f"{total} ads from {len(result.outcomes)} templates."]
    return "\n".join(lines)


async def publish_run_artifact(title: str, result: PipelineResult) -> None:
    """Attach the ads table to the current flow run."""
    await acreate_markdown_artifact(
        markdown=render_run_markdown(title, result),
        key="ads-made",
        description=f"Ads made by {title}",
    )
