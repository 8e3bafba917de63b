#!/usr/bin/env bash
# End-to-end throughput and latency of the appliance, beside the server's own limit,
# measured in one run on this machine:
#
#   1. feed publishes N ticks into a fresh JetStream stream (JSON or Kite);
#   2. the appliance (`run --count N`) consumes them into ClickHouse and exits once all
#      N are durable and acked; we time the process (start-up included) and read its
#      receive-to-durable HDR percentiles. No polling of ClickHouse meanwhile: each
#      clickhouse-client start costs ~35 ms of CPU, a third of a core at 10 polls/s;
#   3. reference: the same rows exported as a Native file (arrival order) and
#      bulk-inserted by clickhouse-client into the same schema in a second database,
#      views included (what the server itself sustains for this schema).
#
# Prints both and their ratio, and appends a dated line to perf/records/e2e.tsv.
# Env: N (1000000), FORMAT (json|kite), COMPRESSION (lz4|none), SHARDS (1), INSTRUMENTS
#      (500: distinct instrument tokens in the feed); unset, these
#      keep the appliance's defaults: BLOCK_ROWS, FETCH (nats.fetch_batch_max), LINGER_MS
#      (ingest.insert_linger_ms), RING_SLOTS, FLUSH_MS; RATE (0: publish everything first, then consume flat out;
#      > 0: the appliance runs while feed publishes open loop at RATE ticks/s, so the
#      receive-to-durable percentiles are those of a steady load), EXTRA (more
#      `key=value` settings, space-separated, e.g. "nats.ack_policy=none spill.mode=always"),
#      BIN (another build, for an A/B against an earlier commit),
#      FEED_ARGS (more `feed` flags under RATE, e.g. "--core": publish without PubAcks),
#      SOURCE (nats; synthetic: no feed and no NATS, the built-in synthetic source
#      generates N JSON ticks flat out on the receiver thread: the pipeline and
#      ClickHouse alone against the same reference; DESIGN §7 asks >= 1.0 there).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${N:-1000000}
FORMAT=${FORMAT:-json}
COMPRESSION=${COMPRESSION:-lz4}
SHARDS=${SHARDS:-1}
RATE=${RATE:-0}
INSTRUMENTS=${INSTRUMENTS:-500}
eval "$(bash .ci/services.sh env)"
# shellcheck source=perf/build.sh
. perf/build.sh
DB=alphapt_perf
SETS=(--set "clickhouse.database=$DB" --set nats.stream_ticks=PERF_TICKS --set 'nats.subject_ticks=perf.ticks.>'
      --set nats.durable=perf --set "clickhouse.compression=$COMPRESSION" --set "ingest.shards=$SHARDS"
      --set "ingest.writers=$SHARDS" --set nats.stream_signals=PERF_SIGNALS --set 'nats.subject_signals=perf.signals.>')
[ -n "${FLUSH_MS:-}" ] && SETS+=(--set "ingest.flush_interval_ms=$FLUSH_MS")
[ -n "${BLOCK_ROWS:-}" ] && SETS+=(--set "ingest.block_rows_max=$BLOCK_ROWS")
[ -n "${FETCH:-}" ] && SETS+=(--set "nats.fetch_batch_max=$FETCH")
[ -n "${LINGER_MS:-}" ] && SETS+=(--set "ingest.insert_linger_ms=$LINGER_MS")
[ -n "${RING_SLOTS:-}" ] && SETS+=(--set "ingest.ring_slots=$RING_SLOTS")
for kv in ${EXTRA:-}; do SETS+=(--set "$kv"); done
# CPU seconds (user + system) a process has used so far, from /proc.
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# The whole machine's jiffies as "busy total", from /proc/stat's first line (idle and
# iowait are not busy): the cores-busy share of a run is the ratio of the deltas.
cpu_jiffies() { awk '/^cpu /{t=0; for(i=2;i<=NF;i++) t+=$i; print t-$5-$6, t; exit}' /proc/stat; }
busy_share() { # $1 $2: busy and total at start
    read -r b t < <(cpu_jiffies)
    echo "scale=4; ($b - $1) / ($t - $2) * 100" | bc -l
}
server_pid() { ss -ltnpH "sport = :$1" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2; }
TIMED=(); [ -x /usr/bin/time ] && TIMED=(/usr/bin/time -f 'appliance cpu %U user %S system' -a -o .run/perf/cpu.txt)
ch() { clickhouse-client --host 127.0.0.1 --port "$CLICKHOUSE_PORT" "$@"; }
now() { date +%s.%N; }

ch --query "DROP DATABASE IF EXISTS $DB"
ch --query "DROP DATABASE IF EXISTS ${DB}_ref"
rm -f .run/perf/rows.native
RUST_LOG=warn $BIN "${SETS[@]}" migrate up >/dev/null
mkdir -p .run/perf
rm -f .run/perf/cpu.txt
nats_pid=$(server_pid 4222); ch_pid=$(server_pid "$CLICKHOUSE_PORT")
# The cache server shares the cores too (the appliance writes every tick's history there).
redis_port=${REDIS_URL##*:}; redis_port=${redis_port%%/*}; redis_pid=$(server_pid "$redis_port")

SOURCE=${SOURCE:-nats}
# The record's format column says which source ran.
[ "$SOURCE" = synthetic ] && FORMAT="json-synthetic"
if [ "$SOURCE" = synthetic ]; then
    echo "== appliance: built-in synthetic source -> ClickHouse, $N ticks flat out (compression $COMPRESSION, $SHARDS shard(s))"
    start=$(now); nats_cpu0=$(cpu_of "$nats_pid"); ch_cpu0=$(cpu_of "$ch_pid"); redis_cpu0=$(cpu_of "$redis_pid"); read -r busy0 total0 < <(cpu_jiffies)
    RUST_LOG=warn "${TIMED[@]}" $BIN "${SETS[@]}" run --quiet --synthetic 0 --synthetic-instruments "$INSTRUMENTS" --count "$N" > .run/perf/run.txt 2>&1 &
    pid=$!
elif [ "$RATE" -gt 0 ]; then
    echo "== steady load: appliance running while feed publishes $N $FORMAT ticks at $RATE/s"
    RUST_LOG=warn $BIN "${SETS[@]}" feed --count 1 --format "$FORMAT" --fresh-stream >/dev/null
    N=$((N + 1))
    start=$(now); nats_cpu0=$(cpu_of "$nats_pid"); ch_cpu0=$(cpu_of "$ch_pid"); redis_cpu0=$(cpu_of "$redis_pid"); read -r busy0 total0 < <(cpu_jiffies)
    RUST_LOG=warn "${TIMED[@]}" $BIN "${SETS[@]}" run --quiet --count "$N" > .run/perf/run.txt 2>&1 &
    pid=$!
    sleep 1
    RUST_LOG=warn $BIN "${SETS[@]}" feed --count "$((N - 1))" --rate "$RATE" --format "$FORMAT" --instruments "$INSTRUMENTS" ${FEED_ARGS:-} | tee .run/perf/feed.txt
else
    echo "== feed: $N $FORMAT ticks into JetStream"
    RUST_LOG=warn $BIN "${SETS[@]}" feed --count "$N" --format "$FORMAT" --instruments "$INSTRUMENTS" --fresh-stream | tee .run/perf/feed.txt
    echo "== appliance: JetStream -> ClickHouse (compression $COMPRESSION, $SHARDS shard(s))"
    start=$(now); nats_cpu0=$(cpu_of "$nats_pid"); ch_cpu0=$(cpu_of "$ch_pid"); redis_cpu0=$(cpu_of "$redis_pid"); read -r busy0 total0 < <(cpu_jiffies)
    RUST_LOG=warn "${TIMED[@]}" $BIN "${SETS[@]}" run --quiet --count "$N" > .run/perf/run.txt 2>&1 &
    pid=$!
fi
status=0
wait "$pid" || status=$?
end=$(now)
busy=$(busy_share "$busy0" "$total0")
cat .run/perf/run.txt
# Where the two cores went while the appliance ran: the servers' share matters as much
# as ours on a box where all three compete.
printf 'cpu seconds over %.2f s wall: nats-server %.2f, clickhouse-server %.2f, redis-server %.2f, %s\n' \
    "$(echo "$end - $start" | bc -l)" \
    "$(echo "$(cpu_of "$nats_pid") - $nats_cpu0" | bc -l)" "$(echo "$(cpu_of "$ch_pid") - $ch_cpu0" | bc -l)" \
    "$(echo "$(cpu_of "$redis_pid") - $redis_cpu0" | bc -l)" \
    "$(cat .run/perf/cpu.txt 2>/dev/null || echo 'appliance cpu unknown (no /usr/bin/time)')"
printf 'cores busy %.1f%% of the run (all %s cores, /proc/stat)\n' "$busy" "$(nproc)"
stored=$(ch --query "SELECT count() FROM $DB.market_ticks")
if [ "$status" -ne 0 ] || [ "$stored" -ne "$N" ]; then
    echo "appliance exited $status with $stored of $N rows stored; see .run/perf/run.txt" >&2; exit 1
fi
app_rate=$(echo "$N / ($end - $start)" | bc -l)

echo "== reference: clickhouse-client bulk Native INSERT of the same rows"
# Into the same schema (a second database migrated like the first), so the server runs
# the same materialized views (OHLC, ML features, depth snapshots) on the reference rows
# as on the appliance's, and in arrival order (stream_seq), as the feed produced them:
# rows read back from the table come out in key order, and 18.16 skips the sort for a
# sorted block. A bare copy of the table without views is measured beside, for scale.
ch --query "DROP DATABASE IF EXISTS ${DB}_ref"
RUST_LOG=warn $BIN "${SETS[@]}" --set "clickhouse.database=${DB}_ref" migrate up >/dev/null
ch --query "SELECT * FROM $DB.market_ticks ORDER BY stream_seq FORMAT Native" > .run/perf/rows.native
ch --query "CREATE TABLE $DB.plain AS $DB.market_ticks"
ch_cpu0=$(cpu_of "$ch_pid"); ref_start=$(now)
ch --query "INSERT INTO ${DB}_ref.market_ticks FORMAT Native" < .run/perf/rows.native
ref_end=$(now); ch_cpu1=$(cpu_of "$ch_pid")
ch --query "INSERT INTO $DB.plain FORMAT Native" < .run/perf/rows.native
plain_end=$(now)
printf 'cpu seconds over %.2f s wall: clickhouse-server %.2f; the table without views: %.0f rows/s, clickhouse-server %.2f\n' \
    "$(echo "$ref_end - $ref_start" | bc -l)" "$(echo "$ch_cpu1 - $ch_cpu0" | bc -l)" \
    "$(echo "$N / ($plain_end - $ref_end)" | bc -l)" "$(echo "$(cpu_of "$ch_pid") - $ch_cpu1" | bc -l)"
ref_rate=$(echo "$N / ($ref_end - $ref_start)" | bc -l)
ratio=$(echo "$app_rate / $ref_rate" | bc -l)
# Under a steady load the appliance runs at the feed's rate; the ratio means nothing.
[ "$RATE" -gt 0 ] && ratio=0
latency=$(grep -o 'receive-to-durable ms.*;' .run/perf/run.txt | head -1 | tr -d ';')
# Journal-first: the group commits' own time, to tell a slow disk from a slow pipeline.
sync=$(grep -o 'journal sync ms [^)]*' .run/perf/run.txt | head -1 || true)
[ -n "$sync" ] && latency="$latency | $sync"

printf 'appliance %.0f ticks/s | clickhouse-client %.0f rows/s | ratio %.2f | %s\n' "$app_rate" "$ref_rate" "$ratio" "$latency"
printf '%s\t%s\t%s cores %s\tN=%s\t%s\t%s\tshards=%s flush=%sms rate=%s\t%.0f\t%.0f\t%.2f\t%s\n' \
    "$(date -u +%FT%TZ)" "$BUILD" "$(nproc)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" \
    "$N" "$FORMAT" "$COMPRESSION" "$SHARDS" "${FLUSH_MS:-default}" "$RATE" "$app_rate" "$ref_rate" "$ratio" "$latency busy=${busy%.*}%${EXTRA:+ [$EXTRA]}" >> perf/records/e2e.tsv
ch --query "DROP DATABASE IF EXISTS $DB"
ch --query "DROP DATABASE IF EXISTS ${DB}_ref"
rm -f .run/perf/rows.native
