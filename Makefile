# The two quick-start commands: `make run` and `make test`.
# Both create the virtualenv, install the project and get the dataset first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EPOCHS ?= 5

.PHONY: setup data run test clean

setup: $(VENV)/.installed data

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

data: $(VENV)/.installed
	PATH="$(CURDIR)/$(BIN):$$PATH" sh scripts/get-dataset.sh

run: setup
	$(BIN)/research run ae --epochs $(EPOCHS)

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) mlflow.db mlruns optuna.db
