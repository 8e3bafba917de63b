#!/usr/bin/env bash
# The hot path's throughput with the slow paths up, with Redis down, with PostgreSQL
# down (issue 15) and with `/metrics` scraped every second (issue 16): the built-in
# synthetic source flat out (`run --synthetic 0 --count N`, no NATS) into ClickHouse,
# the modes alternating PASSES times in one series so they share the box's state.
# "Down" is a closed port: the Redis thread and the audit thread retry with backoff
# while the shards go on. "scraped" is mode up with curl fetching /metrics and
# /health once a second for the whole run.
#
# Per run: a fresh database, the wall time of `run` (start-up and drain included, the
# same in every mode), ticks/s = N / time, and in mode `up` the Redis keys written per
# second from the summary. Appends one dated line per run to perf/records/slow_paths.tsv
# and prints each mode's median.
#
# Env: N (1000000), PASSES (3), MODES ("up redis_down postgres_down scraped"), BIN (a
# copied binary; default: build this tree).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${N:-1000000}
PASSES=${PASSES:-3}
MODES=${MODES:-up redis_down postgres_down scraped}
PORT=19464
eval "$(bash .ci/services.sh env)"
if [ -z "${BIN:-}" ]; then
    cargo build --release -q
    BIN=target/release/alphapt-storage
fi
DB=alphapt_slowpaths
PREFIX=perf-slowpaths:
ch() { clickhouse-client --host 127.0.0.1 --port "$CLICKHOUSE_PORT" "$@"; }
closed_port=1
declare -A RATES
for pass in $(seq 1 "$PASSES"); do
    for mode in $MODES; do
        ch --query "DROP DATABASE IF EXISTS $DB"
        SETS=(--set "clickhouse.database=$DB" --set "redis.key_prefix=$PREFIX"
              --set "spill.dir=.run/spill-slowpaths" --set "http.addr=127.0.0.1:$PORT")
        RUST_LOG=warn $BIN "${SETS[@]}" migrate up >/dev/null
        case $mode in
            redis_down) SETS+=(--set "redis.url=redis://127.0.0.1:$closed_port") ;;
            postgres_down) SETS+=(--set "postgres.url=postgres://postgres@127.0.0.1:$closed_port/x") ;;
        esac
        rm -rf .run/spill-slowpaths
        out=$(mktemp)
        start=$(date +%s.%N)
        RUST_LOG=error $BIN "${SETS[@]}" run --synthetic 0 --count "$N" --quiet >"$out" &
        pid=$!
        scraper=
        if [ "$mode" = scraped ]; then
            # In the background, so the run's end is timed when it ends, not at the
            # scraper's next wake-up.
            # The last /metrics body is kept: its control-thread CPU over the scrapes
            # is the appliance's own cost of being scraped.
            (while kill -0 "$pid" 2>/dev/null; do
                curl -s -o "$out.metrics.new" "http://127.0.0.1:$PORT/metrics" \
                    && mv "$out.metrics.new" "$out.metrics" && echo >>"$out.scrapes"
                curl -s -o /dev/null "http://127.0.0.1:$PORT/health" || true
                sleep 1
            done) &
            scraper=$!
        fi
        wait "$pid"
        end=$(date +%s.%N)
        [ -n "$scraper" ] && wait "$scraper"
        scrapes=0
        [ -f "$out.scrapes" ] && scrapes=$(wc -l <"$out.scrapes")
        rm -f "$out.scrapes"
        scrape_cost=
        if [ -f "$out.metrics" ] && [ "$scrapes" -gt 0 ]; then
            control_s=$(sed -n 's/^alphapt_storage_thread_cpu_seconds_total{thread="control"} //p' "$out.metrics")
            scrape_cost=$(awk -v c="${control_s:-0}" -v n="$scrapes" 'BEGIN { printf "control thread %.2f ms CPU per /metrics + /health", c * 1000 / n }')
        fi
        rm -f "$out.metrics" "$out.metrics.new"
        summary=$(cat "$out")
        rm -f "$out"
        stored=$(ch --query "SELECT count() FROM $DB.market_ticks")
        [ "$stored" -eq "$N" ] || { echo "$mode: stored $stored of $N: $summary" >&2; exit 1; }
        seconds=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }')
        rate=$(awk -v n="$N" -v s="$seconds" 'BEGIN { printf "%.0f", n / s }')
        keys=$(grep -o 'redis cache: [0-9]* keys written' <<<"$summary" | grep -o '[0-9]*' || echo 0)
        keys_rate=$(awk -v k="$keys" -v s="$seconds" 'BEGIN { printf "%.0f", k / s }')
        RATES[$mode]="${RATES[$mode]:-} $rate"
        redis=$(grep -o 'redis cache: [^;]*' <<<"$summary" || true)
        printf '%-14s pass %s: %s ticks/s (%s s), redis keys %s/s, %s scrapes%s; %s\n' "$mode" "$pass" "$rate" "$seconds" "$keys_rate" "$scrapes" "${scrape_cost:+ ($scrape_cost)}" "$redis"
        printf '%s\t%s\t%s cores %s\tN=%s\tmode=%s\tticks_per_s=%s\tseconds=%s\tredis_keys_per_s=%s\t%s\n' \
            "$(date -u +%FT%TZ)" "$(git rev-parse --short HEAD)" "$(nproc)" \
            "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" \
            "$N" "$mode" "$rate" "$seconds" "$keys_rate" "$redis${scrape_cost:+; $scrape_cost}" >> perf/records/slow_paths.tsv
    done
done
for mode in $MODES; do
    median=$(tr ' ' '\n' <<<"${RATES[$mode]}" | grep . | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
    echo "median $mode: $median ticks/s (runs:${RATES[$mode]})"
done
ch --query "DROP DATABASE IF EXISTS $DB"
redis-cli --scan --pattern "$PREFIX*" | xargs -r redis-cli del >/dev/null
rm -rf .run/spill-slowpaths
