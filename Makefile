# The README's two commands: `make run` and `make test`. Each builds .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck pytest bench replay-record clean sandbox

# custom_code runs in bubblewrap (README, Security): Debian's package, installed when missing.
sandbox:
	@command -v bwrap >/dev/null || { apt-get update -qq && apt-get install -y -qq bubblewrap; } \
	  || echo "bubblewrap could not be installed: custom_code steps will be refused (README, Security)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP) sandbox  ## Temporal dev server + worker + API, examples loaded
	$(PY) -m core.devstack

test: lint typecheck pytest  ## everything CI runs

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP) sandbox
	$(VENV)/bin/pytest -q

bench: $(STAMP)  ## B1 interpreter overhead against a hand-written workflow
	$(PY) -m bench.b1_interpreter

replay-record: $(STAMP)  ## record histories for new replay cases (ARGS=--all re-records every one)
	$(PY) -m tests.replay.record $(ARGS)

clean:
	rm -rf $(VENV) .data .mypy_cache .pytest_cache .ruff_cache
