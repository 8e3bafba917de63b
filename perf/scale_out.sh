#!/usr/bin/env bash
# Scale-out throughput: one appliance on the whole stream against APPLIANCES appliances
# on as many subject partitions (DESIGN §8), the same N ticks, the same ClickHouse,
# measured back to back in one run beside clickhouse-client's own bulk insert of the
# rows (the reference perf/e2e.sh uses).
#
#   1. a private nats-server (port NATS_PORT) runs the partition mapping that
#      `alphapt-storage partitions APPLIANCES` prints for the perf subjects;
#   2. feed publishes N JSON ticks over 500 instruments once (mapped on arrival);
#   3. one appliance, no partitions, consumes all N (`run --count N`): timed to its exit;
#   4. APPLIANCES appliances, one partition each, consume the same stream through their
#      own durables into a fresh database: timed from their start until ClickHouse holds
#      N rows (polled twice a second: ~35 ms of CPU a poll), then drained;
#   5. the reference: the rows as Native, bulk-inserted by clickhouse-client into the
#      same schema (views included).
#
# Prints each rate and its ratio to the reference, each process's CPU seconds, and
# appends a dated line to perf/records/scale_out.tsv.
# Env: N (1000000), APPLIANCES (2), NATS_PORT (4333), BIN (another build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${N:-1000000}
APPLIANCES=${APPLIANCES:-2}
NATS_PORT=${NATS_PORT:-4333}
eval "$(bash .ci/services.sh env)"
# shellcheck source=perf/build.sh
. perf/build.sh
DB=alphapt_perf_so
RUN=.run/perf/scale_out
mkdir -p "$RUN"
ch() { clickhouse-client --host 127.0.0.1 --port "$CLICKHOUSE_PORT" "$@"; }
now() { date +%s.%N; }
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat" 2>/dev/null || echo 0; }
COMMON=(--set "nats.url=nats://127.0.0.1:$NATS_PORT" --set nats.stream_ticks=PERF_SO --set 'nats.subject_ticks=perf.so.>'
        --set nats.stream_signals=PERF_SO_SIGNALS --set 'nats.subject_signals=perf.so_signals.>'
        --set "spill.dir=$RUN/spill" --set 'http.addr=127.0.0.1:0')

# 1. The private nats-server with the mapping.
RUST_LOG=warn $BIN "${COMMON[@]}" partitions "$APPLIANCES" > "$RUN/mapping.conf"
rm -rf "$RUN/nats"
nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$RUN/nats" -c "$RUN/mapping.conf" > "$RUN/nats.log" 2>&1 &
nats_pid=$!
cleanup() {
    kill "$nats_pid" 2>/dev/null || true
    ch --query "DROP DATABASE IF EXISTS ${DB}_1" || true
    ch --query "DROP DATABASE IF EXISTS ${DB}_n" || true
    ch --query "DROP DATABASE IF EXISTS ${DB}_ref" || true
    rm -rf "$RUN/nats" "$RUN/spill" "$RUN/rows.native"
}
trap cleanup EXIT
for _ in $(seq 100); do
    (echo > "/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && break
    sleep 0.1
done
ch_pid=$(ss -ltnpH "sport = :$CLICKHOUSE_PORT" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)

# 2. The feed, once.
echo "== feed: $N JSON ticks into a private nats-server mapping $APPLIANCES partitions"
RUST_LOG=warn $BIN "${COMMON[@]}" feed --count "$N" --format json --instruments 500 --fresh-stream | tail -1

# 3. One appliance on the whole stream.
for db in "${DB}_1" "${DB}_n" "${DB}_ref"; do
    ch --query "DROP DATABASE IF EXISTS $db"
    RUST_LOG=warn $BIN "${COMMON[@]}" --set "clickhouse.database=$db" migrate up > /dev/null
done
echo "== one appliance, the whole stream"
nats_cpu0=$(cpu_of "$nats_pid"); ch_cpu0=$(cpu_of "$ch_pid"); start=$(now)
RUST_LOG=warn /usr/bin/time -f '%U %S' -o "$RUN/cpu1.txt" $BIN "${COMMON[@]}" --set "clickhouse.database=${DB}_1" \
    --set nats.durable=perf-so-one run --quiet --count "$N" > "$RUN/one.txt" 2>&1
end=$(now)
one_rate=$(echo "$N / ($end - $start)" | bc -l)
one_cpu=$(awk '{printf "%.2f", $1 + $2}' "$RUN/cpu1.txt")
one_nats=$(echo "$(cpu_of "$nats_pid") - $nats_cpu0" | bc -l)
one_ch=$(echo "$(cpu_of "$ch_pid") - $ch_cpu0" | bc -l)
one_wall=$(echo "$end - $start" | bc -l)

# 4. APPLIANCES appliances, one partition each.
echo "== $APPLIANCES appliances, one partition each"
pids=()
nats_cpu0=$(cpu_of "$nats_pid"); ch_cpu0=$(cpu_of "$ch_pid"); start=$(now)
for id in $(seq 0 $((APPLIANCES - 1))); do
    RUST_LOG=warn $BIN "${COMMON[@]}" --set "clickhouse.database=${DB}_n" --set nats.durable=perf-so \
        --set "nats.partitions=$APPLIANCES" --set "nats.partition_ids=$id" --set "spill.dir=$RUN/spill/p$id" \
        run --quiet > "$RUN/part$id.txt" 2>&1 &
    pids+=($!)
done
stored=0
until [ "$stored" -ge "$N" ]; do
    sleep 0.5
    stored=$(ch --query "SELECT count() FROM ${DB}_n.market_ticks")
    for pid in "${pids[@]}"; do
        kill -0 "$pid" 2>/dev/null || { echo "an appliance exited early; see $RUN/part*.txt" >&2; exit 1; }
    done
done
end=$(now)
many_cpu=0
for pid in "${pids[@]}"; do many_cpu=$(echo "$many_cpu + $(cpu_of "$pid")" | bc -l); done
many_nats=$(echo "$(cpu_of "$nats_pid") - $nats_cpu0" | bc -l)
many_ch=$(echo "$(cpu_of "$ch_pid") - $ch_cpu0" | bc -l)
many_wall=$(echo "$end - $start" | bc -l)
kill -TERM "${pids[@]}"
for pid in "${pids[@]}"; do wait "$pid" || { echo "an appliance did not drain cleanly; see $RUN/part*.txt" >&2; exit 1; }; done
many_rate=$(echo "$N / $many_wall" | bc -l)
distinct=$(ch --query "SELECT uniqExact(stream_seq) FROM ${DB}_n.market_ticks")
[ "$distinct" -eq "$N" ] || { echo "$distinct distinct of $N stored by the partitioned run" >&2; exit 1; }

# 5. The reference.
echo "== reference: clickhouse-client bulk Native INSERT of the same rows"
ch --query "SELECT * FROM ${DB}_1.market_ticks ORDER BY stream_seq FORMAT Native" > "$RUN/rows.native"
ref_start=$(now)
ch --query "INSERT INTO ${DB}_ref.market_ticks FORMAT Native" < "$RUN/rows.native"
ref_end=$(now)
ref_rate=$(echo "$N / ($ref_end - $ref_start)" | bc -l)

printf 'one appliance:  %.0f ticks/s (ratio %.2f) over %.2f s; cpu s: appliance %.2f, nats-server %.2f, clickhouse %.2f\n' \
    "$one_rate" "$(echo "$one_rate / $ref_rate" | bc -l)" "$one_wall" "$one_cpu" "$one_nats" "$one_ch"
printf '%s appliances: %.0f ticks/s (ratio %.2f) over %.2f s; cpu s: appliances %.2f, nats-server %.2f, clickhouse %.2f\n' \
    "$APPLIANCES" "$many_rate" "$(echo "$many_rate / $ref_rate" | bc -l)" "$many_wall" "$many_cpu" "$many_nats" "$many_ch"
printf 'clickhouse-client: %.0f rows/s\n' "$ref_rate"
printf '%s\t%s\t%s cores\tN=%s\tappliances=%s\t%.0f\t%.0f\t%.0f\t%.2f\t%.2f\n' \
    "$(date -u +%FT%TZ)" "$BUILD" "$(nproc)" "$N" "$APPLIANCES" "$one_rate" "$many_rate" "$ref_rate" \
    "$(echo "$one_rate / $ref_rate" | bc -l)" "$(echo "$many_rate / $ref_rate" | bc -l)" >> perf/records/scale_out.tsv
