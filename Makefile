# Entry points for a fresh machine: `make demo`, `make test` and `make test-fast`.
# All three create .venv, install CPU torch 2.13.0 when no torch is importable, then the package,
# every dependency pinned to the versions in constraints.txt (the versions the README's demo
# numbers come from). `make constraints` rewrites that file from the current .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint install clean constraints

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

# Exact versions of everything installed, matprobe itself excluded; "+cpu" dropped so the same
# pin also admits the default torch wheel of that version.
constraints: $(BIN)/python
	{ echo "# Exact versions the demo's numbers and the test suite were produced with (pip freeze of the"; \
	  echo "# project's .venv, matprobe excluded). Regenerate with \`make constraints\`."; \
	  $(BIN)/python -m pip freeze --exclude-editable --exclude matprobe | sed -e 's/+cpu$$//'; } > constraints.txt

install: $(STAMP)

# One test process per CPU (pytest-xdist); the quick demo is built once per run, under a file lock,
# and copied into each process's own directory (tests/conftest.py).
XDIST := -n auto

# the 15 slowest tests are listed at the end: the suite's 10-minute budget (CI) is watched there
test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider $(XDIST) --durations=15

# The tests that answer in under 90 s on two cores (the `slow` marker: tests/conftest.py);
# `make test` (and CI) still runs everything.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider $(XDIST) -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests

# Until the demo command exists this says so instead of pretending.
demo: $(STAMP)
	@if $(BIN)/matprobe demo --help >/dev/null 2>&1; then \
		$(BIN)/matprobe demo --out reports/demo; \
	else \
		echo "demo not built yet"; \
	fi

clean:
	rm -rf $(VENV)
