# Every target creates .venv when it is missing and installs what it needs into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: run serve test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/gwlab run $(ARGS)

serve: $(VENV)/.installed
	$(BIN)/gwlab serve $(ARGS)

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -rs $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
