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

# The sweep tests also run against a private PostgreSQL server on 127.0.0.1,
# started (and installed, as root) by scripts/start-postgres.sh; when that
# fails, those tests skip and say why.
test: setup
	@url="$${RESEARCH_TEST_POSTGRES_URL:-$$(sh scripts/start-postgres.sh | sed -n 's/^export RESEARCH_TEST_POSTGRES_URL=//p')}"; \
	echo "RESEARCH_TEST_POSTGRES_URL=$${url:-(unset: PostgreSQL tests skip)}"; \
	RESEARCH_TEST_POSTGRES_URL="$$url" $(BIN)/python -m pytest -q --durations=20

clean:
	rm -rf $(VENV) mlflow.db mlruns optuna.db
