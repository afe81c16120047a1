# The two commands people type: `make demo` and `make test`. Each builds .venv first when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,cloud]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/instaseg demo

test: $(STAMP)
	$(PY) -m pytest -q -ra

lint: $(STAMP)
	$(VENV)/bin/ruff check instaseg tests
	$(VENV)/bin/ruff format --check instaseg tests

clean:
	rm -rf $(VENV) build *.egg-info
