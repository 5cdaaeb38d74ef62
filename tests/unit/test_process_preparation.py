"""What a flow process prepares before its run starts, in a fresh interpreter each.

A fresh `python` is the only honest place to see what an import pulls in: this test process has
long imported everything. Each check runs a real interpreter on the project's code.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _fresh(code: str, **env: str) -> dict[str, object]:
    """Run `code` in a fresh interpreter (project root on the path); it prints one JSON line."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "AD_SCHEDULER_DATA_DIR": "/tmp/ad-scheduler-prep", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_postgres_process_imports_its_driver_and_configures_the_mappers_up_front() -> None:
    seen = _fresh(
        "import json, sys\n"
        "from db.session import prepare_process\n"
        "before = 'asyncpg' in sys.modules\n"
        "prepare_process()\n"
        "import sqlalchemy as sa\n"
        "from db.models import ScheduledJob\n"
        "print(json.dumps({'before': before, 'after': 'asyncpg' in sys.modules,\n"
        "    'configured': sa.inspect(ScheduledJob).configured}))\n",
        DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres",
    )
    assert seen == {"before": False, "after": True, "configured": True}


def test_an_embedded_database_process_does_not_import_the_postgres_driver() -> None:
    seen = _fresh(
        "import json, sys\n"
        "from db.session import prepare_process\n"
        "prepare_process()\n"
        "print(json.dumps({'asyncpg': 'asyncpg' in sys.modules,\n"
        "    'aiosqlite': 'aiosqlite' in sys.modules}))\n",
        DATABASE_URL="",
    )
    assert seen == {"asyncpg": False, "aiosqlite": True}


def test_loading_the_flow_prepares_what_the_run_would_otherwise_pay_for() -> None:
    seen = _fresh(
        "import json, sys\n"
        "import flows.scheduled_job\n"
        "from blocks.generators.provider_http import shared_ssl_context\n"
        "from PIL import Image\n"
        "print(json.dumps({m: m in sys.modules for m in (\n"
        "    'asyncpg', 'prefect.task_engine', 'blocks.generators.gemini',\n"
        "    'blocks.generators.http_service')} | {\n"
        "    'pillow_plugins': Image._initialized >= 1,\n"
        "    'tls_cached': shared_ssl_context.cache_info().currsize == 1}))\n",
        DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres",
    )
    # Generator modules stay out: a run imports only the one its block names.
    assert seen == {
        "asyncpg": True,
        "prefect.task_engine": True,
        "blocks.generators.gemini": False,
        "blocks.generators.http_service": False,
        "pillow_plugins": True,
        "tls_cached": True,
    }


def test_provider_clients_share_one_tls_context() -> None:
    from pydantic import SecretStr

    from blocks.generators.gemini import GeminiImageGenerator
    from blocks.generators.http_service import HttpAdGenerator
    from blocks.generators.provider_http import shared_ssl_context

    gemini = GeminiImageGenerator(api_key=SecretStr("k"), provider_limit="p")
    service = HttpAdGenerator(
        url="https://ads.example.invalid/generate", auth_token=SecretStr("t"), provider_limit="p"
    )
    contexts = set()
    for generator in (gemini, service, gemini):
        client = generator.get_client()
        # The context the client's connection pool wraps its sockets with.
        contexts.add(id(client._transport._pool._ssl_context))  # type: ignore[attr-defined]
    assert contexts == {id(shared_ssl_context())}


def test_a_tuned_worker_s_flow_runs_load_one_ca_certificate_per_prefect_client() -> None:
    """`TUNED_WORKER_ENV` (plain-http servers on 127.0.0.1) names `LOOPBACK_CA_BUNDLE`: every
    Prefect client a flow-run process creates loads that one certificate, not certifi's ~150."""
    from scheduler.local_prefect import LOOPBACK_CA_BUNDLE, TUNED_WORKER_ENV

    assert TUNED_WORKER_ENV["PREFECT_API_SSL_CERT_FILE"] == str(LOOPBACK_CA_BUNDLE)
    seen = _fresh(
        "import json, ssl\n"
        "made = []\n"
        "create = ssl.create_default_context\n"
        "def spy(*args, **kwargs):\n"
        "    context = create(*args, **kwargs)\n"
        "    made.append([kwargs.get('cafile'), context.cert_store_stats()['x509_ca']])\n"
        "    return context\n"
        "ssl.create_default_context = spy\n"
        "from prefect.client.orchestration import get_client\n"
        "made.clear()  # contexts made by imports (not API clients)\n"
        "get_client(sync_client=True)\n"
        "get_client()\n"
        "print(json.dumps({'made': made}))\n",
        PREFECT_API_URL="http://127.0.0.1:9/api",
        PREFECT_HOME="/tmp/ad-scheduler-prep/prefect",
        PREFECT_API_SSL_CERT_FILE=TUNED_WORKER_ENV["PREFECT_API_SSL_CERT_FILE"],
    )
    assert seen["made"] == [[str(LOOPBACK_CA_BUNDLE), 1], [str(LOOPBACK_CA_BUNDLE), 1]]
