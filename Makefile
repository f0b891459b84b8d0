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

# Every benchmark once (bench/_*.py are helpers), each writing its section of a fresh bench/results.json,
# then the table of all of them (bench/report.py). A benchmark that fails is named at the end (status 1).
bench: install
	@rm -f bench/results.json; failed=""; \
	for script in $$(ls bench/*.py | grep -v -e '^bench/_' -e '^bench/report\.py$$'); do \
		echo "== $$script"; $(PY) $$script || failed="$$failed $$script"; \
	done; \
	echo "== bench/report.py"; $(PY) bench/report.py; \
	if [ -n "$$failed" ]; then echo "failed:$$failed"; exit 1; fi

# The MLflow UI of ./mlflow.db (or $MLFLOW_TRACKING_URI) on 127.0.0.1:5000, one worker: up in seconds.
ui: install
	$(PY) -m raylm.cli ui $(UI_ARGS)

lint: install
	$(VENV)/bin/ruff check platform tests jobs bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
