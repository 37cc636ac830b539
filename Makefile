# tfdist developer commands. `make test` and `make train` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.tfdist-installed
PYTEST_ARGS ?=

.PHONY: test install clean

# Re-install only when the packaging files change, so repeated runs start at once.
$(STAMP): setup.cfg pyproject.toml
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

# pytest exits 5 when it collected no tests: that is a broken suite, not a pass.
test: $(STAMP)
	@$(VPY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5); failing." >&2; exit 1; fi; \
	exit $$rc

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
