"""What a job spec refers to, checked before anything is written: the tenant's product, its
templates and the blocks saved on the Prefect server. Each failure is an `InvalidJobSpec`
naming the field and what is allowed."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from db.driver import AsyncSession
from db.job_rows import ResolvedRefs
from db.queries import jobs as q
from domain.errors import FieldProblem, InvalidJobSpec
from domain.spec import JobSpec, SpecificTemplates, UnusedTemplates, UploadedTemplates
from scheduler.prefect_api import block_exists
from scheduler.uploads import Upload, read_upload

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

    from db.models import ScheduledJob


@dataclass(frozen=True)
class CheckedRefs:
    """A spec's references as the database knows them, plus what is to be uploaded.

    Attributes:
        refs: What goes into the row (`db.job_rows.fill_row`).
        product_name: For the deployment's description.
        brand_name: For the deployment's description.
        uploads: Template files read from disk (mode `uploaded`), not stored yet.
    """

    refs: ResolvedRefs
    product_name: str
    brand_name: str
    uploads: list[Upload] = field(default_factory=list)


async def check_refs(
    session: AsyncSession, tenant_id: uuid.UUID, spec: JobSpec, job: ScheduledJob | None
) -> CheckedRefs:
    """Resolve the spec's product and templates for `tenant_id` (`job`: the deployed job being
    updated, else None).

    Raises:
        InvalidJobSpec: Another tenant, an unknown or deactivated product, too few templates,
            unknown templates or unreadable uploads.
    """
    if spec.tenant_id is not None and spec.tenant_id != tenant_id:
        raise InvalidJobSpec.one("tenant_id", "must be the tenant this scheduler acts for")
    found = await q.product_with_brand(session, tenant_id, spec.product_id)
    if found is None:
        raise InvalidJobSpec.one(
            "product_id",
            f"product {spec.product_id} not found; allowed: a product of this tenant",
        )
    product, brand = found
    if job is None and not getattr(product, "active", True):
        raise InvalidJobSpec.one(
            "product_id",
            f"product {product.name!r} is deactivated; allowed: an active product "
            "(`ad-scheduler products update --active` puts it back)",
        )

    def checked(refs: ResolvedRefs, uploads: list[Upload] | None = None) -> CheckedRefs:
        return CheckedRefs(refs, product.name, brand.name, uploads or [])

    tpl = spec.templates
    if isinstance(tpl, UnusedTemplates):
        catalog = await q.count_library_templates(session, tenant_id, brand.id)
        if tpl.count > catalog:
            raise InvalidJobSpec.one(
                "templates.count",
                f"{tpl.count} templates per run but the catalog has {catalog} for this "
                f"product; allowed: 1..{catalog}",
            )
        return checked(
            ResolvedRefs(product.id, brand.id, "unused", tpl.count, None, tpl.when_exhausted)
        )
    if isinstance(tpl, SpecificTemplates):
        if (
            job is not None
            and job.template_mode == "uploaded"
            and tpl.templates == (job.template_ids or [])
        ):
            # The job's own uploads, as `spec_from_row` reports them: unchanged.
            return checked(
                ResolvedRefs(
                    product.id,
                    brand.id,
                    "uploaded",
                    len(tpl.templates),
                    list(tpl.templates),
                    job.exhausted_policy,
                )
            )
        names, missing = await q.resolve_template_refs(session, tenant_id, tpl.templates, brand.id)
        if missing:
            raise InvalidJobSpec.one(
                "templates.templates",
                f"not found: {', '.join(missing)}; allowed: ids or storage names of active "
                "templates of this tenant (and the product's brand)",
            )
        return checked(ResolvedRefs(product.id, brand.id, "specific", len(names), names, "recycle"))
    assert isinstance(tpl, UploadedTemplates)
    uploads = [read_upload(i, path) for i, path in enumerate(tpl.files)]
    names = list(dict.fromkeys(u.storage_name for u in uploads))
    return checked(
        ResolvedRefs(product.id, brand.id, "uploaded", len(names), names, "recycle"), uploads
    )


async def check_blocks(client: PrefectClient, spec: JobSpec) -> None:
    """Every block the spec names is saved on the Prefect server, so a job never registers only
    to fail every run.

    Raises:
        InvalidJobSpec: Naming each missing block (or one of the wrong type) and its field.
    """
    from blocks.email_resend import ResendEmail
    from flows.pipeline import GENERATOR_BLOCK_SLUGS
    from scheduler.slack_secret import SLACK_BLOCK_SLUG

    wanted: list[tuple[str, str, tuple[str, ...], str]] = []
    if spec.export.email_block:
        slug = ResendEmail.get_block_type_slug()
        wanted.append(("export.email_block", spec.export.email_block, (slug,), "Resend email"))
    if spec.export.slack_webhook_block:
        wanted.append(
            (
                "export.slack_webhook_block",
                spec.export.slack_webhook_block,
                (SLACK_BLOCK_SLUG,),
                "Slack webhook",
            )
        )
    if spec.ad.generator_block:
        wanted.append(
            ("ad.generator_block", spec.ad.generator_block, GENERATOR_BLOCK_SLUGS, "generator")
        )
    problems = []
    for path, reference, slugs, label in wanted:
        given_slug, _, name = reference.rpartition("/")
        if given_slug and given_slug not in slugs:
            problems.append(
                FieldProblem(
                    field=path,
                    message=f"{reference!r} is a {given_slug!r} block; allowed: a "
                    f"{label} block ({', '.join(slugs)})",
                )
            )
            continue
        if not await block_exists(client, (given_slug,) if given_slug else slugs, name):
            problems.append(
                FieldProblem(
                    field=path,
                    message=f"no {label} block named {name!r} is saved on the Prefect "
                    f"server; allowed: the name of a saved {' or '.join(slugs)} block",
                )
            )
    if problems:
        raise InvalidJobSpec(problems)
