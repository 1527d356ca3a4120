# Two commands do all the set-up: `make demo` and `make test`.
# Both create .venv, install the package and, when missing, the Debian
# packages the station and its tests run against (mosquitto, systemd-analyze,
# mbpoll as an independent Modbus master, PostgreSQL for the consumer's tests;
# the tests start their own server on a free port and never use the system one).

PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-stamp
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_UPDATED := $(VENV)/.apt-updated

.PHONY: all demo test setup system-deps bench lint clean mutation

all: test

setup: system-deps $(STAMP)

$(STAMP): pyproject.toml
	@$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "error: Python 3.11+ is required; $(PY) is $$($(PY) --version). Fix: install python3.11 or run make PY=python3.11 ..." >&2; exit 1; }
	@$(PY) -c 'import ensurepip' 2>/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-venv; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

# Only installs what is missing; never touches services that are already running.
system-deps:
	@missing=""; \
	  [ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null 2>&1 || missing="$$missing mosquitto"; \
	  command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	  command -v mbpoll >/dev/null 2>&1 || missing="$$missing mbpoll"; \
	  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	  if [ -n "$$missing" ]; then \
	    echo "installing:$$missing"; \
	    $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	  fi

demo: setup
	$(BIN)/station demo

test: setup
	$(BIN)/pytest -q

bench: setup
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/spectro_modbus.py
	$(BIN)/python bench/modbus_poll.py
	$(BIN)/python bench/consumer_ingest.py

# Mutation testing (not part of `make test` or CI; about 40 min on 2 cores).
# What is mutated and which tests run: [tool.mutmut] in pyproject.toml. The
# score per file leaves out mutants that only change message text; see
# docs/PERFORMANCE.md, "Mutation testing". Always a fresh run: mutmut's cache
# would keep verdicts from before a test changed.
mutation: setup
	$(BIN)/pip install -q -e '.[test,mutation]'
	rm -rf mutants
	$(BIN)/mutmut run --max-children 2 > mutation.log 2>&1 || { tail -c 2000 mutation.log; exit 1; }
	@tail -c 300 mutation.log | tr '\r' '\n' | tail -2
	$(BIN)/python tests/mutation_score.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache mutants mutation.log
