# The two commands people type: `make demo` and `make test`. Each builds .venv first when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-deps lint venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,cloud]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/instaseg quickstart

# The real components the app tests drive: Debian's Chromium (Playwright) and a Label Studio server in
# its own venv. Both scripts return at once when already installed.
test-deps:
	bash scripts/ci_setup_chromium.sh
	bash scripts/ci_setup_label_studio.sh

test: $(STAMP) test-deps
	$(PY) -m pytest -q -ra

lint: $(STAMP)
	$(VENV)/bin/ruff check instaseg tests
	$(VENV)/bin/ruff format --check instaseg tests

clean:
	rm -rf $(VENV) .venv-ls build *.egg-info
