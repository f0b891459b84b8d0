# raylm: `make demo` runs the main job (a scaling study), `make test` runs the tests.
# Every target creates or reuses .venv through `make install`.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.raylm-installed
PYTEST_ARGS ?=

.PHONY: install test demo bench ui lint clean

install: $(STAMP)

# Re-installs only when the project's dependencies or the pinned versions change.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

test: install
	$(VENV)/bin/pytest -m "not gpu" --durations=15 $(PYTEST_ARGS)

demo: install
	$(PY) jobs/demo.py

bench: install
	@set -e; ls bench/*.py >/dev/null 2>&1 || { echo "no benchmarks yet"; exit 0; }; for script in bench/*.py; do echo "== $$script"; $(PY) $$script; done

# The MLflow UI of ./mlflow.db (or $MLFLOW_TRACKING_URI) on 127.0.0.1:5000, one worker: up in seconds.
ui: install
	$(PY) -m raylm.cli ui $(UI_ARGS)

lint: install
	$(VENV)/bin/ruff check platform tests jobs bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
