# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv, install CPU torch 2.13.0 when no torch is importable, then the package.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

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
