#!/usr/bin/env bash
# Receive-to-durable latency of the appliance itself at a steady rate, without NATS:
# the built-in synthetic source generates JSON ticks on the receiver thread at RATE
# ticks/s through the same rings, shards, writers and ClickHouse INSERTs, so the figure
# is the appliance's and ClickHouse's, not the cost of a feed and a nats-server sharing
# the cores (perf/e2e.sh with RATE measures that whole chain).
#
# For each FLUSH_MS in the list: a fresh database, `run --synthetic RATE --count N`,
# and the HDR percentiles the writers kept (per block, from its oldest message's
# receive time to the end of its INSERT: an upper bound for every message in it).
# Appends a dated line per run to perf/records/latency.tsv, writes each run's full
# per-message distribution (`run --latency-report`) to perf/records/latency-<FLUSH>ms.hgrm
# and plots them together into perf/records/latency.png (perf/plot_latency.py).
#
# Env: RATE (100000), N (RATE * 10), FLUSH_MS ("10", the default; a list runs each),
# BLOCK_ROWS (65536), SPILL_MODE ("always", the default, journal-first: the durable point
# is the journal's sync, and ClickHouse gets one INSERT per table per INSERT_INTERVAL_MS,
# 1000; "overflow": the durable point is the INSERT),
# CH_DOWN_AFTER_S (unset): stop ClickHouse this many seconds into each run, so the
# spill journal is the durable point from then on (DESIGN §7: p99 < 50 ms); the run
# ends with ClickHouse still down, then ClickHouse is started again and
# `spill replay` stores what was spilled before the count is checked.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RATE=${RATE:-100000}
N=${N:-$((RATE * 10))}
FLUSH_LIST=${FLUSH_MS:-10}
BLOCK_ROWS=${BLOCK_ROWS:-65536}
SPILL_MODE=${SPILL_MODE:-always}
INSERT_INTERVAL_MS=${INSERT_INTERVAL_MS:-1000}
eval "$(bash .ci/services.sh env)"
# BIN=<path> runs another build (an A/B against an earlier commit) instead of this tree's.
if [ -z "${BIN:-}" ]; then
    cargo build --release -q
    BIN=target/release/alphapt-storage
fi
DB=alphapt_latency
ch() { clickhouse-client --host 127.0.0.1 --port "$CLICKHOUSE_PORT" "$@"; }

reports=()
for flush in $FLUSH_LIST; do
    report=perf/records/latency-${flush}ms.hgrm
    reports+=("$report")
    ch --query "DROP DATABASE IF EXISTS $DB"
    SETS=(--set "clickhouse.database=$DB" --set "ingest.flush_interval_ms=$flush"
          --set "ingest.block_rows_max=$BLOCK_ROWS" --set "spill.mode=$SPILL_MODE"
          --set "spill.insert_interval_ms=$INSERT_INTERVAL_MS")
    RUST_LOG=warn $BIN "${SETS[@]}" migrate up >/dev/null
    SETS+=(--set "spill.dir=.run/spill-latency")
    rm -rf .run/spill-latency
    if [ -n "${CH_DOWN_AFTER_S:-}" ]; then
        # A short I/O timeout: the stop is seen at once, not after 30 s.
        SETS+=(--set "clickhouse.io_timeout_ms=500" --set "clickhouse.connect_timeout_ms=200")
        out=$(mktemp)
        RUST_LOG=warn $BIN "${SETS[@]}" run --synthetic "$RATE" --count "$N" --quiet \
            --latency-report "$report" >"$out" &
        pid=$!
        sleep "$CH_DOWN_AFTER_S"
        bash .ci/services.sh stop-clickhouse >/dev/null
        wait "$pid"
        summary=$(cat "$out")
        rm -f "$out"
        bash .ci/services.sh start-clickhouse >/dev/null
        RUST_LOG=warn $BIN "${SETS[@]}" spill replay >/dev/null
    else
        summary=$(RUST_LOG=warn $BIN "${SETS[@]}" run --synthetic "$RATE" --count "$N" --quiet \
            --latency-report "$report")
    fi
    latency=$(grep -o 'receive-to-durable ms[^;]*' <<<"$summary")
    spill=$(grep -o 'receive-to-spill-durable ms[^)]*' <<<"$summary" || true)
    latency="$latency${spill:+; $spill}"
    # INSERTs per second over the run's nominal length (N / RATE seconds).
    inserts=$(grep -o 'in [0-9]* INSERTs' <<<"$summary" | grep -o '[0-9]*' || echo 0)
    latency="$latency; spill.mode $SPILL_MODE; $(awk -v i="$inserts" -v n="$N" -v r="$RATE" 'BEGIN { printf "%.1f INSERTs/s", i * r / n }')"
    stored=$(ch --query "SELECT count() FROM $DB.market_ticks")
    [ "$stored" -eq "$N" ] || { echo "stored $stored of $N: $summary" >&2; exit 1; }
    down=${CH_DOWN_AFTER_S:+ clickhouse stopped after ${CH_DOWN_AFTER_S}s}
    printf 'rate %s/s flush %s ms blocks <= %s rows%s: %s\n' "$RATE" "$flush" "$BLOCK_ROWS" "$down" "$latency"
    printf '%s\t%s\t%s cores %s\tN=%s\trate=%s\tflush=%sms\tblock_rows=%s\t%s\n' \
        "$(date -u +%FT%TZ)" "$(git rev-parse --short HEAD)" "$(nproc)" \
        "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" \
        "$N" "$RATE" "$flush" "$BLOCK_ROWS" "$latency${down}" >> perf/records/latency.tsv
done
ch --query "DROP DATABASE IF EXISTS $DB"
# The .hgrm text is the record and the PNG a view of it: with no venv (no PyPI) the run
# still counts, so a failed plot only warns.
title="receive-to-durable at $RATE ticks/s, spill.mode $SPILL_MODE${down:-}"
if err=$( { py=$(bash perf/plot_env.sh) \
        && "$py" perf/plot_latency.py "${reports[@]}" -o perf/records/latency.png --title "$title"; } \
        2>&1 >/dev/null); then
    echo "plot: perf/records/latency.png (${reports[*]})"
else
    echo "warning: no perf/records/latency.png: ${err##*$'\n'}" >&2
fi
