"""Job ↔ Prefect deployment for the SDK: the one implementation is `flows/deployment_sync.py`.

Plan, target and converge live at the flows layer so that the flows' own status changes (a job
completing at `max_runs`, pausing after failures) use the same code the SDK does; this module
keeps the SDK's import path.
"""

from __future__ import annotations

from flows.deployment_sync import (
    APP_TAG,
    COLLISION_STRATEGY,
    DEFAULT_BASE_DEPLOYMENT,
    DEFAULT_WORK_POOL,
    ENTRYPOINT,
    FLOW_NAME,
    MANUAL_TAG,
    ONE_TIME_TAG,
    PULL_STEP,
    SCHEDULE_SLUG,
    DeploymentTarget,
    JobDeployment,
    converge_existing_deployment,
    converge_job_deployment,
    converge_job_status,
    converge_one_time_run,
    converge_schedule,
    create_job_deployment,
    deployment_name,
    describe_job,
    ensure_process_pool,
    job_parameter_schema,
    job_tags,
    one_time_idempotency_key,
    pending_sdk_runs,
    plan_for,
    remove_job_deployment,
    resolve_target,
    trigger_run,
)

__all__ = [
    "APP_TAG",
    "COLLISION_STRATEGY",
    "DEFAULT_BASE_DEPLOYMENT",
    "DEFAULT_WORK_POOL",
    "ENTRYPOINT",
    "FLOW_NAME",
    "MANUAL_TAG",
    "ONE_TIME_TAG",
    "PULL_STEP",
    "SCHEDULE_SLUG",
    "DeploymentTarget",
    "JobDeployment",
    "converge_existing_deployment",
    "converge_job_deployment",
    "converge_job_status",
    "converge_one_time_run",
    "converge_schedule",
    "create_job_deployment",
    "deployment_name",
    "describe_job",
    "ensure_process_pool",
    "job_parameter_schema",
    "job_tags",
    "one_time_idempotency_key",
    "pending_sdk_runs",
    "plan_for",
    "remove_job_deployment",
    "resolve_target",
    "trigger_run",
]
