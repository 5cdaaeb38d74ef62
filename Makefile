# Two commands do all the set-up on a fresh machine with python3 and make:
#   make run   - the main job on the embedded default (no services needed)
#   make test  - the test suite
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.installed-stamp

.PHONY: setup bytecode run test lint lock clean

# requirements.lock pins the runtime (what the Docker image installs); requirements-dev.lock
# pins the same runtime plus the test and lint tools (what make installs here).
# Bytecode is compiled at install (uv does not by default): every flow run is a new Python
# process, and one that finds no .pyc compiles every module it imports from source (~2 s of CPU
# per run here, where PYTHONDONTWRITEBYTECODE=1 keeps Python from writing them on first use).
$(STAMP): pyproject.toml requirements-dev.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check uv==0.13.9
	$(UV) pip sync --compile-bytecode --python $(PY) requirements-dev.lock
	$(UV) pip install --compile-bytecode --python $(PY) --no-deps -e .
	touch $(STAMP)

# The project's own modules, recompiled where the source changed (an editable install's code
# is not compiled by uv).
PROJECT_PACKAGES := config domain db blocks flows scheduler tests bench

bytecode: $(STAMP)
	$(PY) -m compileall -q $(PROJECT_PACKAGES) > /dev/null

setup: $(STAMP) bytecode

run: setup
	$(VENV)/bin/ad-scheduler demo

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Re-pin every dependency (with hashes) after editing pyproject.toml.
lock: setup
	$(UV) pip compile pyproject.toml --python-version 3.11 --generate-hashes -o requirements.lock
	$(UV) pip compile pyproject.toml --extra dev --python-version 3.11 --generate-hashes \
		-o requirements-dev.lock

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
