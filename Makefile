# Two commands on a fresh machine with Python >= 3.11 and pip: `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean

# vn.py goes in with --no-deps, for tests/test_adapter_vnpy.py: its own dependencies bring PySide6, pandas and
# plotly, which the adapter never imports; the test extra lists what vnpy.trader does import.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --only-binary ta-lib -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps 'vnpy==4.5.0'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/orderflow demo

# pytest exits 5 when it collects no test: that fails here like any other non-zero code.
test: $(STAMP)
	$(BIN)/python -m ruff check orderflow_plugin hooks tests bench examples
	$(BIN)/python -m pytest
	$(BIN)/python -m orderflow_plugin.simtest --seeds 10000

clean:
	rm -rf $(VENV) build dist *.egg-info
