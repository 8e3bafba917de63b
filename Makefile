# Entry points for developers and CI. `make` alone lists the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

SERVICES := bash .ci/services.sh
# Exports CLICKHOUSE_*, NATS_URL, REDIS_URL, POSTGRES_URL, ALPHAPT_* for the command after it.
WITH_ENV := eval "$$($(SERVICES) env)" &&

.PHONY: help services build package install test lint bench fuzz python-stack run run-synthetic clean-run

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-13s %s\n", $$1, $$2}'

services: ## start PostgreSQL, Redis, NATS, ClickHouse 18.16 and the chdb venv (idempotent)
	$(SERVICES) all

build: ## cargo build --release
	cargo build --release

# The .deb for bare metal (docs/bare-metal.md): binary, systemd unit, config in /etc, the
# migrations and the tuning references. cargo-deb comes from crates.io when missing.
package: ## build the .deb (cargo deb)
	cargo deb --version >/dev/null 2>&1 || cargo install cargo-deb --locked
	deb=$$(cargo deb); echo "package: $$deb"

install: package ## build and install the .deb on this host (dpkg -i)
	deb=$$(ls -t target/debian/alphapt-storage_*.deb | head -n 1); \
	$$([ "$$(id -u)" = 0 ] || echo sudo) dpkg -i "$$deb"

# The crash and outage suites run under the default ack policy (AckNone), then again
# under AckAll: the other policy operators may choose (tests/common/e2e.rs).
ACK_ALL_SUITES := --test exactly_once --test crash_points --test journal_first \
	--test spill_full --test clickhouse_outage --test e2e_nats

test: services ## unit + integration tests against the local services
	$(WITH_ENV) cargo test --all-targets --no-fail-fast
	$(WITH_ENV) TEST_ACK_POLICY=all cargo test --no-fail-fast $(ACK_ALL_SUITES)

lint: ## rustfmt check and clippy with warnings as errors
	cargo fmt --all -- --check && cargo clippy --all-targets -- -D warnings

# Every reader of untrusted bytes under cargo-fuzz (fuzz/; needs nightly and cargo-fuzz),
# one target after another; non-zero on a finding (inputs kept in fuzz/artifacts/).
FUZZ_SECONDS ?= 30
fuzz: ## fuzz the parsers of untrusted bytes, FUZZ_SECONDS (30) per target (fuzz/run.sh)
	FUZZ_MALLOC_LIMIT_MB=$${FUZZ_MALLOC_LIMIT_MB:-257} fuzz/run.sh $(FUZZ_SECONDS)

bench: services ## cargo bench against the local services
	$(WITH_ENV) cargo bench

# Not part of `bench`: it needs the platform's python_stack.py (PYTHON_STACK, default
# ../shared/bench/python_stack.py) and PyPI for its venv.
python-stack: services ## the appliance vs the platform's Python stack, same messages (perf/python_stack.sh)
	perf/python_stack.sh

# The real path at a modest rate: `feed` publishes realistic JSON ticks for 500
# instruments (one in a thousand deliberately bad) to JetStream in the background while
# the appliance consumes them; Ctrl-C stops the feed and drains the appliance. What the
# feed published after the appliance stopped is consumed by the next `make run`.
RUN_RATE ?= 20000
APP = target/release/alphapt-storage --config tuning/default.toml
# A stream `make run` creates holds at most 2 GiB (about 2.5 M ticks, two minutes at the
# default rate); the oldest are discarded past it.
RUN_STREAM = --set nats.stream_max_bytes=2147483648
run: services ## migrate, then run the appliance on JetStream with the feed publishing beside it (Ctrl-C drains)
	$(WITH_ENV) cargo build --release -q; \
	$(APP) migrate up; \
	mkdir -p .run; \
	$(APP) $(RUN_STREAM) feed --rate $(RUN_RATE) --count $$(( $(RUN_RATE) * 86400 )) --instruments 500 \
	  --bad-ratio 0.001 >.run/feed.log 2>&1 & \
	feed=$$!; \
	trap 'kill $$feed 2>/dev/null || true' EXIT; \
	echo "feed: $(RUN_RATE) ticks/s to JetStream in the background (log: .run/feed.log)"; \
	$(APP) $(RUN_STREAM) run

run-synthetic: services ## the same without NATS: the built-in synthetic source at RUN_RATE
	$(WITH_ENV) cargo build --release -q; \
	$(APP) migrate up; \
	$(APP) run --synthetic $(RUN_RATE)

clean-run: ## stop our ClickHouse and delete .run/
	$(SERVICES) stop-clickhouse
	rm -rf .run
