# Two commands on a fresh machine: `make run` and `make test`. Both set up (or reuse) .venv first.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
MANIFEST := dbt_project/target/manifest.json
DBT_SOURCES := $(shell find dbt_project/models dbt_project/seeds dbt_project/macros -type f 2>/dev/null) \
	dbt_project/dbt_project.yml dbt_project/profiles.yml

export DAGSTER_HOME := $(CURDIR)/dagster_home
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/$(VENV)

.PHONY: setup run test dev serve bench lint clean

# uv installs the locked set in seconds; it is bootstrapped with pip into its own small venv.
$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# --compile-bytecode: uv does not write .pyc files by default, and where PYTHONDONTWRITEBYTECODE is set
# (as on this project's machines) Python then never does either: every process (each `mlops` call,
# each dbt process, each test run) re-compiled dagster, dbt, pandas, sklearn... from source, about
# 8-10 s per process here. Compiling once at set-up (about 30-50 s, once) removes that.
$(VENV)/.synced: pyproject.toml uv.lock Makefile | $(UV)
	$(UV) sync --frozen --compile-bytecode --python "$$($(PYTHON) -c 'import sys; print(sys.executable)')"
	@touch $@

# dagster-dbt reads dbt's manifest when the code location loads; rebuild it when dbt files change.
# (dbt runs keep their own partial-parse state per warehouse: see mlops_assets/defs/features.py.)
$(MANIFEST): $(VENV)/.synced $(DBT_SOURCES)
	cd dbt_project && ../$(VENV)/bin/dbt parse --quiet
	@touch $@

# The project's own modules too (quick; stale .pyc files are ignored by Python, so this never misleads).
setup: $(VENV)/.synced $(MANIFEST)
	@$(VENV)/bin/python -m compileall -q mlops_assets sensors benchmarks tests

run: setup
	$(VENV)/bin/mlops run

test: setup
	.ci/ensure-postgres
	.ci/ensure-chromium
	$(VENV)/bin/pytest -n 2 --dist loadfile

dev: setup
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# The scoring service on http://127.0.0.1:8080 (keys: var/serving.yaml, see README "Scoring service");
# one worker process a core (`make serve SERVE_WORKERS=4`).
SERVE_WORKERS ?= 2
serve: setup
	$(VENV)/bin/mlops serve --host 127.0.0.1 --port 8080 --workers $(SERVE_WORKERS)

bench: setup
	$(VENV)/bin/python benchmarks/pipeline_vs_bare_script.py

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) $(TOOLS) var dbt_project/target dbt_project/logs
