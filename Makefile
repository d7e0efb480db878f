# Two commands: `make run` and `make test`. Both create .venv and install the pinned
# dependencies when needed (the stamp file is rebuilt whenever a requirements file changes).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The Azure ML environments whose pins the local set-up installs: every trainer in the registry
# (retrain/trainers.py: a family registered there brings its environment.yml) and the scorer's.
ENVIRONMENTS := $(shell $(PYTHON) tools/environment_pins.py --files)
ifeq ($(ENVIRONMENTS),)
$(error tools/environment_pins.py --files listed no environment files: is $(PYTHON) a Python 3.11?)
endif
REQS := requirements.txt requirements-dev.txt $(ENVIRONMENTS) retrain/trainers.py tools/environment_pins.py constraints.txt pyproject.toml

.PHONY: setup run test test-fast lint typecheck bench constraints checkov clean

setup: $(STAMP)

$(STAMP): $(REQS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and exactly pinned: every later requirement that admits 2.13.0 is then already met,
	# so nothing pulls another (CUDA) build. Where pip has no CPU wheel of 2.13.0 at hand, point
	# PIP_EXTRA_INDEX_URL at PyTorch's CPU wheel index before `make`.
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	# The trainer's and scorer's pins are those of their Azure ML environment files, installed here
	# together with the Function App's: pins that cannot be resolved fail on every machine, not in Azure.
	$(BIN)/python tools/environment_pins.py $(ENVIRONMENTS) > $(VENV)/environment-pins.txt
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt -r $(VENV)/environment-pins.txt -c constraints.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

run: setup
	$(BIN)/retrain run --source sample --ticker MSFT

# Three workers on two cores, one test file per worker at a time (--dist loadfile): a file's module-scoped
# fixtures (a trained model, a running endpoint) are built once, and most of the suite waits on
# subprocesses and servers, so a third worker fills the waits. --durations names the slowest tests.
# Files go out in collection order (--no-loadscope-reorder): the few long e2e files first, the many short
# unit files last to even out the end, not the files with the most tests first.
test: setup lint typecheck
	$(BIN)/python -m pytest -n 3 --dist loadfile --no-loadscope-reorder --durations=15

# The fast tier only: unit tests, no host, no training (about a minute).
test-fast: setup
	$(BIN)/python -m pytest tests/unit

typecheck: setup
	$(BIN)/mypy

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# Checkov on the Bicep template, in a virtualenv of its own (.venv-checkov): its dependencies never meet
# the project's pins. Fails on any failed check, and on a template checkov could not parse (which it
# otherwise reports with exit code 0) or a scan that checked nothing. --skip-download: no calls to the
# Prisma Cloud API (guidelines, severities); the checks themselves are all local. CI runs it after
# `make test` (.ci/run).
CHECKOV_VENV := .venv-checkov
CHECKOV_VERSION := 3.3.30
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)

$(CHECKOV_STAMP):
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet "checkov==$(CHECKOV_VERSION)"
	@touch $(CHECKOV_STAMP)

checkov: $(CHECKOV_STAMP)
	@out=$$($(CHECKOV_VENV)/bin/checkov -d infra --framework bicep --compact --quiet --skip-download 2>&1); \
	rc=$$?; echo "$$out"; \
	if echo "$$out" | grep -q "Parsing errors"; then echo "checkov: a template could not be parsed"; exit 1; fi; \
	if ! echo "$$out" | grep -Eq "Passed checks: [1-9]"; then echo "checkov: no check ran"; exit 1; fi; \
	exit $$rc

# Re-pin after changing a requirements file: `make constraints`.
constraints: setup
	$(BIN)/python -m pip freeze --exclude-editable | sed 's/^torch==2.13.0+cpu/torch==2.13.0/' > constraints.txt

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) .retrain .pytest_cache
