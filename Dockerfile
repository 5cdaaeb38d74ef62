# ad-scheduler image: the flow code plus its pinned dependencies, on the official Prefect image.
#
# Used two ways:
#   - as the flow-run image of the Docker / Kubernetes work pools (prefect.yaml variants), and
#   - as a process worker host: the default CMD starts a worker (and its fork server) on the
#     process pool.
# prefect.yaml's pull step (`scheduler.pull_steps.set_code_directory`) changes to the folder of
# the installed package: /opt/prefect/ad-scheduler below. No secret is baked in: API keys and webhook URLs live in Prefect
# blocks; PREFECT_API_URL / DATABASE_URL are given at run time.
#
#   docker build -t registry.example.com/ad-scheduler:latest .
FROM prefecthq/prefect:3.9.1-python3.11

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_NO_CACHE=1 \
    AD_SCHEDULER_DATA_DIR=/var/lib/ad-scheduler \
    PREFECT_HOME=/home/app/.prefect

WORKDIR /opt/prefect/ad-scheduler

# Dependencies first (a cached layer): exact versions from the lock, each file checked against
# its hash. uv itself is pinned to the version the Makefile uses.
COPY requirements.lock ./
# Compiled to bytecode here: PYTHONDONTWRITEBYTECODE (and a read-only site-packages for the
# app user) mean nothing is written at run time, and every flow run is a fresh process (a fresh
# container on the Docker / Kubernetes pools) that would otherwise compile each module it
# imports from source: ~2 s of CPU per run.
RUN python -m pip install "uv==0.13.9" \
 && uv pip install --system --compile-bytecode --require-hashes -r requirements.lock

# The project: code at a fixed path, installed (without touching the pinned
# dependencies) so that the `ad-scheduler` CLI exists and imports resolve from this folder.
COPY pyproject.toml README.md prefect.yaml ./
COPY config ./config
COPY domain ./domain
COPY db ./db
COPY blocks ./blocks
COPY flows ./flows
COPY scheduler ./scheduler
RUN uv pip install --system --compile-bytecode --no-deps -e . \
 && python -m compileall -q config domain db blocks flows scheduler

# Run as an unprivileged user; it owns only the data folder (local storage, embedded SQLite).
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin app \
 && mkdir -p /var/lib/ad-scheduler \
 && chown -R app:app /var/lib/ad-scheduler
USER app

# A process worker beside the fork server its flow runs are forked from (`ad-scheduler worker`:
# ~2 CPU-s less per run than a fresh interpreter, on a pool whose command is ours; the pool is
# created with it when missing). At most 8 flow runs at once
# (scheduler.local_prefect.DEFAULT_WORKER_LIMIT): a burst is CPU-bound, so more slots than ~4
# per core only add memory; raise it with the host's cores (docs/scaling.md, section 3).
CMD ["ad-scheduler", "worker", "--pool", "ad-scheduler-process", "--limit", "8"]
