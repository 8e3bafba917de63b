# Entry points for developers and CI. `make` alone lists the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

SERVICES := bash .ci/services.sh
# Exports CLICKHOUSE_*, NATS_URL, REDIS_URL, POSTGRES_URL, ALPHAPT_* for the command after it.
WITH_ENV := eval "$$($(SERVICES) env)" &&

.PHONY: help services build test lint bench python-stack run clean-run

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-13s %s\n", $$1, $$2}'

services: ## start PostgreSQL, Redis, NATS, ClickHouse 18.16 and the chdb venv (idempotent)
	$(SERVICES) all

build: ## cargo build --release
	cargo build --release

test: services ## unit + integration tests against the local services
	$(WITH_ENV) cargo test --all-targets --no-fail-fast

lint: ## rustfmt check and clippy with warnings as errors
	cargo fmt --all -- --check && cargo clippy --all-targets -- -D warnings

bench: services ## cargo bench against the local services
	$(WITH_ENV) cargo bench

# Not part of `bench`: it needs the platform's python_stack.py (PYTHON_STACK, default
# ../shared/bench/python_stack.py) and PyPI for its venv.
python-stack: services ## the appliance vs the platform's Python stack, same messages (perf/python_stack.sh)
	perf/python_stack.sh

# The built-in synthetic feed: realistic JSON ticks for 500 instruments at a modest rate.
RUN_RATE ?= 20000
run: services ## migrate, then run the appliance on the built-in synthetic feed (Ctrl-C drains)
	$(WITH_ENV) cargo run --release -- --config tuning/default.toml migrate up && \
	cargo run --release -- --config tuning/default.toml run --synthetic $(RUN_RATE)

clean-run: ## stop our ClickHouse and delete .run/
	$(SERVICES) stop-clickhouse
	rm -rf .run
