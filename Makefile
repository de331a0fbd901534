# The verbs users type. Everything runs inside the uv workspace (.venv), created on demand.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV ?= uv
STACK_SH := scripts/stack.sh
E2E := STACK=e2e MODE=local $(STACK_SH)

.PHONY: help sync up down ps logs migrate kill start test lint typecheck unit e2e e2e-stack k8s-check

help: ## list the verbs
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

sync: ## install the workspace (locked) into .venv
	@$(UV) sync --frozen --quiet

up: sync ## start the stack (Docker Compose if an engine answers, else local processes)
	@$(STACK_SH) up

down: ## stop the stack; no process is left behind
	@$(STACK_SH) down

ps: ## show the stack's processes
	@$(STACK_SH) ps

logs: ## the stack's logs, merged in time order (FOLLOW=1 to follow)
	@$(STACK_SH) logs

migrate: sync ## create the database if missing and migrate every schema to head
	@$(STACK_SH) migrate

kill: ## fault drill: SIGKILL one process, e.g. make kill NAME=users-worker
	@$(STACK_SH) kill $(NAME)

start: ## start one stopped process, e.g. make start NAME=users-worker
	@$(STACK_SH) start $(NAME)

lint: sync ## ruff (lint + format check)
	@$(UV) run --frozen ruff check .
	@$(UV) run --frozen ruff format --check .

typecheck: sync ## mypy, strict
	@$(UV) run --frozen mypy libs services tests scripts

unit: sync ## unit and integration tests (real Postgres and Redis)
	@$(UV) run --frozen pytest libs services

e2e: sync ## tests/e2e against a stack that is already up (USERS_URL, ORDERS_URL, NOTIFICATIONS_URL)
	@$(UV) run --frozen pytest tests/e2e

e2e-stack: sync ## bring up a private stack, run tests/e2e against it, bring it down
	@$(E2E) up
	@set -a; USERS_URL=http://127.0.0.1:18001 ORDERS_URL=http://127.0.0.1:18002 \
	  NOTIFICATIONS_URL=http://127.0.0.1:18003 STACK=e2e; set +a; \
	  $(UV) run --frozen pytest tests/e2e; status=$$?; $(E2E) down; exit $$status

test: lint typecheck unit e2e-stack ## everything CI runs: lint, types, tests, e2e on a fresh stack
