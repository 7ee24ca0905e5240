# GPU Commons: the two commands are `make run` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
# The test suite runs against real PostgreSQL, Redis and Slurm (see .ci/run and deploy/).
TEST_ENV := DATABASE_URL=$${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/gpucommons} \
	CELERY_BROKER_URL=$${TEST_BROKER_URL:-redis://127.0.0.1:6379/14} \
	CACHE_URL=$${TEST_CACHE_URL:-redis://127.0.0.1:6379/15}

.PHONY: install run test lint fmt typecheck services-up slurm-up slurm-down ldap-up browser-up sessions-up bench-up bench clean

$(BIN)/activate: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/activate

install: $(BIN)/activate

## make run: install, migrate, create the demo tenant, start a worker with beat and the web server.
# Links in mails point at this server (SITE_URL from PORT); every mail, from the web server and
# the worker alike, is written to var/mail/ (filemail:///var/mail is relative: <repo>/var/mail).
run: export SITE_URL ?= http://127.0.0.1:$(PORT)
run: export EMAIL_URL ?= filemail:///var/mail
run: install
	@mkdir -p var
	$(BIN)/python manage.py migrate --noinput
	@$(BIN)/celery -A portal worker --beat --loglevel=INFO --concurrency=2 \
		--schedule var/celerybeat-schedule > var/celery.log 2>&1 & echo $$! > var/celery.pid
	@echo; echo "  GPU Commons: $$SITE_URL/  (Celery worker + beat log: var/celery.log; mail: var/mail/)"
	@$(BIN)/python manage.py bootstrap_demo | sed 's/^/  /'; echo
	@trap 'kill $$(cat var/celery.pid) 2>/dev/null' EXIT INT TERM; \
		$(BIN)/python manage.py runserver 127.0.0.1:$(PORT)

## make test: install, start PostgreSQL/Redis/Slurm/OpenLDAP if needed, lint, and run the whole suite.
test: install services-up slurm-up ldap-up browser-up sessions-up lint
	$(TEST_ENV) $(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy portal accounts quotas jobs

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install
	$(BIN)/mypy portal accounts quotas jobs

services-up:
	bash deploy/services-up.sh

## make slurm-up: the Slurm 22.05 cluster and, beside it, the Slurm 24.11 one (built once).
slurm-up:
	bash deploy/slurm/up.sh
	bash deploy/slurm/up.sh --version 24.11

browser-up:
	bash deploy/browser-up.sh

## make sessions-up: Debian's nginx (the session proxy) and JupyterLab for the dev cluster's node.
sessions-up:
	bash deploy/sessions/up.sh

ldap-up:
	bash deploy/ldap/up.sh

## make bench-up: Debian's wrk, bench/api.py's load generator (without it the bench falls back
## to Python client threads, which take a share of the CPU they measure).
bench-up:
	bash deploy/apt-install.sh wrk

slurm-down:
	bash deploy/slurm/down.sh

## make bench: every benchmark, printing its figures (needs services-up and slurm-up).
bench: install services-up slurm-up sessions-up bench-up
	$(TEST_ENV) $(BIN)/python bench/ledger.py
	$(TEST_ENV) $(BIN)/python bench/joblist.py
	$(TEST_ENV) $(BIN)/python bench/api.py
	$(TEST_ENV) $(BIN)/python bench/sync.py
	$(TEST_ENV) $(BIN)/python bench/submit.py
	$(TEST_ENV) $(BIN)/python bench/sessions.py

clean:
	rm -rf $(VENV) var staticfiles
