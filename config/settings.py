"""Settings for ad-scheduler, read from the environment (pydantic-settings).

Priority, as pydantic-settings applies it: 1. environment variables, 2. a `.env` file in the
working directory, 3. the defaults below. The defaults are the *embedded* configuration: a
SQLite file in the project's data folder, a local folder for storage, the offline renderer.
Secrets are Prefect blocks (see `blocks/`); the one secret read here is the Slack webhook URL a
person may hand `ad-scheduler jobs create` through the environment instead of a flag, which the
SDK moves into a block at once (a `SecretStr`: never shown).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The repository root (or the install prefix's parent when installed without the repo).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: The base deployment `prefect deploy` creates from prefect.yaml, and the work pool used when
#: there is none (job deployments copy their pool and pull steps from the base deployment).
DEFAULT_BASE_DEPLOYMENT = "ad-scheduler"
DEFAULT_WORK_POOL = "ad-scheduler-process"
#: The variable naming where a worker's ad-scheduler code is (named in the pull step's errors).
CODE_DIR_ENV = "AD_SCHEDULER_CODE_DIR"
#: The variable naming a worker's fork server. The pool's command reads it itself, with no
#: import of this module (scheduler/forkserver_client.py says why; a test keeps them equal).
FORKSERVER_ENV = "AD_SCHEDULER_FORKSERVER"


class Settings(BaseSettings):
    """Runtime settings.

    Attributes:
        data_dir: Folder for the embedded SQLite database and the local storage.
        database_url: A SQLAlchemy URL (`postgresql+asyncpg://…`, `sqlite+aiosqlite:///…`) or the
            name of a saved prefect-sqlalchemy `AsyncSqlAlchemyConnector` block. Empty means the
            embedded SQLite file `<data_dir>/ad-scheduler.db`.
        tenant_id: The tenant the CLI acts for when none is given.
        base_deployment: Base deployment of `run-scheduled-job` that job deployments copy their
            work pool and pull steps from; empty means `ad-scheduler`.
        work_pool: Work pool used when the base deployment does not exist; empty means
            `ad-scheduler-process`.
        code_dir: On a worker, the folder holding the ad-scheduler code the pull step changes
            to; empty means where this package is installed.
        forkserver: On a process worker, the socket of the fork server flow runs start from.
        storage_block, prefect_ui_url, run_heartbeat_seconds, db_retry_attempts,
            retention_days, debug, slack_webhook_url: see each field's description.

    Every `AD_SCHEDULER_*` variable is read here and nowhere else: the CLI's `--tenant`,
    `--debug` and `--slack-webhook-url` fall back to these fields when not given
    (`tests/unit/test_settings.py` checks both).
    """

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    data_dir: Path = Field(
        default=PROJECT_ROOT / "data",
        validation_alias="AD_SCHEDULER_DATA_DIR",
        description="Folder for the embedded database and local storage.",
    )
    database_url: str = Field(
        default="",
        validation_alias="DATABASE_URL",
        description="SQLAlchemy URL, or the name of an AsyncSqlAlchemyConnector block.",
    )
    tenant_id: str = Field(
        default="00000000-0000-0000-0000-000000000001",
        validation_alias="AD_SCHEDULER_TENANT_ID",
        description="Default tenant for the CLI.",
    )

    base_deployment: str = Field(
        default=DEFAULT_BASE_DEPLOYMENT,
        validation_alias="AD_SCHEDULER_BASE_DEPLOYMENT",
        description="Base deployment job deployments copy their work pool and pull steps from.",
    )
    work_pool: str = Field(
        default=DEFAULT_WORK_POOL,
        validation_alias="AD_SCHEDULER_WORK_POOL",
        description="Work pool used when there is no base deployment.",
    )
    code_dir: str = Field(
        default="",
        validation_alias=CODE_DIR_ENV,
        description="Folder of the ad-scheduler code on a worker; empty: where it is installed.",
    )
    forkserver: str = Field(
        default="",
        validation_alias=FORKSERVER_ENV,
        description=(
            "On a process worker, the Unix socket of the fork server its flow runs are forked "
            "from (`process_worker` sets it); empty: each run starts a fresh interpreter."
        ),
    )

    storage_block: str = Field(
        default="",
        validation_alias="AD_SCHEDULER_STORAGE_BLOCK",
        description="Name of a saved AdStorage block; empty means a local folder.",
    )
    prefect_ui_url: str = Field(
        default="",
        validation_alias="AD_SCHEDULER_PREFECT_UI_URL",
        description="Base URL of the Prefect UI, for links in exports (optional).",
    )

    run_heartbeat_seconds: float = Field(
        default=30.0,
        gt=0,
        validation_alias="AD_SCHEDULER_RUN_HEARTBEAT_SECONDS",
        description="How often a running job touches its run row (the reconciler's liveness).",
    )

    db_retry_attempts: int = Field(
        default=7,
        ge=1,
        le=20,
        validation_alias="AD_SCHEDULER_DB_RETRY_ATTEMPTS",
        description=(
            "Attempts in all (the first included) for a short database write or connect that "
            "meets a connection error; the default rides out about 25 s of outage, 1 fails at "
            "once."
        ),
    )

    retention_days: int = Field(
        default=180,
        ge=1,
        le=36500,
        validation_alias="AD_SCHEDULER_RETENTION_DAYS",
        description=(
            "Age in days after which the prune-history flow deletes run history, ad runs, "
            "generated files, deliveries and run artifacts (what a job still needs is kept)."
        ),
    )

    debug: bool = Field(
        default=False,
        validation_alias="AD_SCHEDULER_DEBUG",
        description="The CLI prints the traceback of an error (as `--debug` does).",
    )
    slack_webhook_url: SecretStr | None = Field(
        default=None,
        validation_alias="AD_SCHEDULER_SLACK_WEBHOOK_URL",
        description="`jobs create` without `--slack-webhook-url`: the job's Slack webhook URL "
        "(the SDK stores it in a secret block).",
    )

    @property
    def db_retry_attempts_configured(self) -> bool:
        """True when `AD_SCHEDULER_DB_RETRY_ATTEMPTS` was set (environment or `.env`)."""
        return "db_retry_attempts" in self.model_fields_set

    @property
    def embedded_database_path(self) -> Path:
        """Path of the embedded SQLite database file."""
        return self.data_dir / "ad-scheduler.db"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings (tests call `get_settings.cache_clear()`)."""
    return Settings()
