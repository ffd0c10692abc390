# The two commands of the README: `make demo` (runs everything on embedded defaults) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Real services the tests start themselves (never mocked, never skipped); Chromium for the web app's browser test.
# PostgreSQL: the second ledger backend (its server binaries are off PATH; pg_ctlcluster comes with them).
APT_PACKAGES := mosquitto mosquitto-clients victoria-metrics mbpoll socat chromium chromium-driver postgresql
TOOLS := mosquitto mosquitto_pub victoria-metrics mbpoll socat chromium chromedriver pg_ctlcluster

.PHONY: demo test lint system-deps wheelhouse clean

demo: $(VENV)/.demo-installed
	$(BIN)/kilowatch demo

test: system-deps $(VENV)/.dev-installed lint
	$(BIN)/python -m pytest

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/kilowatch schemas --check
	$(BIN)/kilowatch profiles check
	$(BIN)/kilowatch profiles docs --check

# Offline agent bundles for Raspberry Pi OS bookworm (arm64, armhf; Python 3.11):
# dist/wheelhouse/kilowatch-agent-<arch>.tar.gz. Names any dependency without a wheel and what to do.
wheelhouse: $(VENV)/.python-ok
	$(BIN)/python deploy/wheelhouse.py --out dist/wheelhouse

# Installs the Debian packages the tests need when root; otherwise says exactly what to run.
system-deps:
	@missing=""; for t in $(TOOLS); do command -v $$t >/dev/null 2>&1 || [ -x /usr/sbin/$$t ] || missing="$$missing $$t"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
		echo "installing$$missing: apt-get install $(APT_PACKAGES)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null; \
	else \
		echo "missing:$$missing. Run: sudo apt-get install $(APT_PACKAGES)  (then make test again)"; exit 1; \
	fi

$(VENV)/.python-ok:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "kilowatch needs Python >= 3.11, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	touch $@

$(VENV)/.demo-installed: pyproject.toml $(VENV)/.python-ok
	$(BIN)/python -m pip install -q -e ".[demo]"
	touch $@

$(VENV)/.dev-installed: pyproject.toml $(VENV)/.python-ok
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
