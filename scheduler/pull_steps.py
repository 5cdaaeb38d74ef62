"""The pull step of every ad-scheduler deployment: run from the code installed on the worker.

A fixed path in the pull step (`/opt/prefect/ad-scheduler`, where the Dockerfile copies the code)
works in the image and nowhere else: on a process worker started from a checkout every run
crashed before its flow started. A process worker runs each flow in a fresh temporary folder, so
"no pull step" does not work either (and `prefect deploy` would record the CI checkout's path).
This step changes to the folder of the ad-scheduler code *this* worker has installed, which is
`/opt/prefect/ad-scheduler` in the image and the checkout on a local worker; the entrypoints in
`prefect.yaml` are relative to it.
"""

from __future__ import annotations

import os
from pathlib import Path

from config.settings import CODE_DIR_ENV, PROJECT_ROOT, Settings

#: The step as it appears in `prefect.yaml` and in the fallback of `flows/deployment_sync.py`.
PULL_STEP = "scheduler.pull_steps.set_code_directory"


def code_directory() -> Path:
    """`$AD_SCHEDULER_CODE_DIR`, else the project folder of the installed `config` package."""
    # Read afresh, not the process-wide cached settings: the step runs once per flow run and the
    # worker's environment at that moment is the truth.
    configured = Settings().code_dir.strip()
    return Path(configured).expanduser() if configured else PROJECT_ROOT


def set_code_directory() -> dict[str, str]:
    """Pull step: change the working directory to `code_directory()`.

    Returns:
        `{"directory": <absolute path>}` (the output shape of Prefect's `set_working_directory`).

    Raises:
        FileNotFoundError: The folder does not exist or holds no `flows/` package (names it and
            the variable that sets it).
    """
    directory = code_directory().resolve()
    if not (directory / "flows").is_dir():
        raise FileNotFoundError(
            f"no ad-scheduler code in {directory} (expected a flows/ folder); set "
            f"{CODE_DIR_ENV} to the folder that holds it"
        )
    os.chdir(directory)
    return {"directory": str(directory)}
