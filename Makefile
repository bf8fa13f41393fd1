# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --disable-pip-version-check

.PHONY: run test lint setup setup-test

# Each stage says what it does; the last lines say how to sign in (serve.py).
run: setup
	@echo "==> Preparing the metadata database (migrations)"
	@$(PY) manage.py migrate --noinput --verbosity 0
	@echo "==> First start: master key, administrator, first plan (nothing to do after the first time)"
	@$(PY) manage.py bootstrap
	@echo "==> Starting the web server and the task workers"
	@$(PY) manage.py serve

test: setup-test
	$(PY) -m pytest

# The habits that keep the code as docs/ARCHITECTURE.md describes it (pyproject.toml).
lint: setup-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	$(PY) manage.py makemigrations --check --dry-run

# What running needs (requirements.txt)...
setup: $(VENV)/.installed
# ...and what the tests and benchmarks add (requirements-test.txt).
setup-test: $(VENV)/.installed-test

$(VENV)/.installed: requirements.txt
	@echo "==> Creating the virtualenv in $(VENV)/"
	@$(PYTHON) -m venv $(VENV)
	@$(PIP) --quiet --upgrade pip
	@echo "==> Installing what Strongroom needs to run (requirements.txt; a minute or two the first time)"
	@$(PIP) -r requirements.txt
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	@echo "==> Installing the test tools (requirements-test.txt)"
	@$(PIP) -r requirements-test.txt
	@touch $@
