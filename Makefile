# tfdist developer commands. `make test` and `make train` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.tfdist-installed
PYTEST_ARGS ?=
# Test processes: the suite's multi-process tests mostly wait (start-up, barriers, polling), so two
# pytest workers keep both cores busy. Whole files go to one worker (module fixtures stay shared),
# slowest files first (tests/conftest.py).
# PYTEST_WORKERS=0 runs everything in this process.
PYTEST_WORKERS ?= 2

.PHONY: test lint install clean train strip-notebooks

# Re-install only when the packaging files change, so repeated runs start at once.
$(STAMP): setup.cfg pyproject.toml
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

# ruff (bugs, dead code) and mypy (types); configured in pyproject.toml. Order-only on the venv
# so `make lint VENV=<an existing venv>` uses that venv as it is.
lint: | $(STAMP)
	$(VPY) -m ruff check .
	$(VPY) -m mypy

# Lint first, then the suite. pytest exits 5 when it collected no tests: that is a broken suite,
# not a pass.
test: $(STAMP) lint
	@$(VPY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=20 \
		$(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5); failing." >&2; exit 1; fi; \
	exit $$rc

# The default run: CNN on the 8x8 digits, custom-loop route, MirroredStrategy over 2 logical CPUs
# (or all GPUs); prints the test accuracy. A fresh run each time; more flags via TRAIN_ARGS.
TRAIN_ARGS ?=
train: $(STAMP)
	@rm -rf runs/default
	@$(VPY) -m tfdist.train --model_dir=runs/default $(TRAIN_ARGS)

# Committed notebooks carry no outputs or execution counts (tests/test_notebooks.py checks it).
strip-notebooks: | $(STAMP)
	$(VPY) notebooks/strip_outputs.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
