#!/usr/bin/env bash
# The appliance against the platform's Python stack (nats-py + clickhouse-driver,
# `../shared/bench/python_stack.py`), both measured in one run on the same messages
# (DESIGN §7: the whole appliance at least 20x the Python stack):
#
#   1. `python_stack.py publish N` puts N JSON ticks into its stream PYSTACK_TICKS
#      (`pystack.ticks.<exchange>.<token>`), once;
#   2. for each BATCH: `python_stack.py consume BATCH N` ingests all N into database
#      `pystack` (a new durable consumer from the stream start each time; its own
#      ticks/s, timed around its consume loop); then the appliance (`run`, fresh
#      database alphapt_pystack, a durable of its own, so it too reads all N from the
#      start) over the same stream, timed like perf/e2e.sh: `run --count N` from its
#      start to its exit, once all N are stored and acked;
#   3. prints both rates and the ratio appliance / python per batch (the appliance's
#      rate twice: its whole process, and as python_stack.py times itself, from the
#      first tick in to the last INSERT done), what the appliance
#      rejected or flagged in the Python stack's JSON, and appends a dated line per
#      batch to perf/records/python_stack.tsv; drops the databases and streams it made.
#
# Run:  bash .ci/services.sh all && perf/python_stack.sh
#       N=100000 BATCHES="100 10000" perf/python_stack.sh
# Env: N (200000; a multiple of every batch: python_stack.py inserts only full batches),
#      BATCHES ("100 10000"), COMPRESSION (lz4|none, the appliance's),
#      BIN (another build of the appliance, for an A/B; the record names its file),
#      PYTHON_STACK (../shared/bench/python_stack.py beside the repo),
#      QUIET_IDLE (70): before each timed pass wait, at most QUIET_WAIT_S (300) s, until
#      the CPUs are at least this % idle over a second (0: don't wait). On a shared box
#      the Python stack's small round trips (batch 100) slow down 3-6x under other
#      load, far more than the appliance; the idle % is recorded with each line.
# python_stack.py talks to 127.0.0.1:4222 and 127.0.0.1:9000 itself, so the services
# must be on those ports. Its venv (nats-py, clickhouse-driver, pinned) is kept in
# ${XDG_CACHE_HOME:-~/.cache}/alphapt-storage/pystack-venv and reused.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
N=${N:-200000}
BATCHES=${BATCHES:-100 10000}
COMPRESSION=${COMPRESSION:-lz4}
QUIET_IDLE=${QUIET_IDLE:-70}
QUIET_WAIT_S=${QUIET_WAIT_S:-300}
PYTHON_STACK=${PYTHON_STACK:-$ROOT/../shared/bench/python_stack.py}
# nats-py 2.16 speaks to nats-server 2.9 (JetStream API of 2.9); clickhouse-driver 0.2.11
# negotiates down to ClickHouse 18.16's protocol revision.
PINS=(nats-py==2.16.0 clickhouse-driver==0.2.11 pytz==2026.6 tzlocal==5.4.5)
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/alphapt-storage"
VENV="$CACHE/pystack-venv"
PY="$VENV/bin/python"
DB=alphapt_pystack
PYDB=pystack
STREAM=PYSTACK_TICKS
SIGNALS=PYSTACK_SIGNALS
OUT=.run/perf
# validation_flags bits, in order (src/model/quality.rs FLAGS).
FLAG_NAMES=(missing_optional nonpositive_price crossed_book depth_unsorted quantity_insane
    future_timestamp stale_timestamp out_of_order price_jump off_tick_size outside_circuit)

die() { printf 'python_stack.sh: %s\n' "$*" >&2; exit 1; }

if [ ! -f "$PYTHON_STACK" ]; then
    die "no Python stack at $PYTHON_STACK; set PYTHON_STACK=/path/to/python_stack.py (the platform's, shared/bench/python_stack.py)"
fi
PYTHON_STACK=$(cd "$(dirname "$PYTHON_STACK")" && pwd)/$(basename "$PYTHON_STACK")
[[ "$N" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer, not '$N'"
[[ "$QUIET_IDLE" =~ ^[0-9]+$ && "$QUIET_WAIT_S" =~ ^[0-9]+$ ]] || die "QUIET_IDLE and QUIET_WAIT_S are whole numbers"
read -r -a batches <<<"$BATCHES"
[ "${#batches[@]}" -gt 0 ] || die "BATCHES is empty"
for b in "${batches[@]}"; do
    [[ "$b" =~ ^[1-9][0-9]*$ ]] || die "BATCHES holds '$b', not a positive integer"
    [ $((N % b)) -eq 0 ] || die "N=$N is not a multiple of batch $b: python_stack.py inserts only full batches and would wait for the rest"
done

eval "$(bash .ci/services.sh env)"
[ "$CLICKHOUSE_PORT" = 9000 ] || die "python_stack.py connects to ClickHouse on 9000 only; CLICKHOUSE_PORT is $CLICKHOUSE_PORT"
ch() { clickhouse-client --host 127.0.0.1 --port "$CLICKHOUSE_PORT" "$@"; }
now() { date +%s.%N; }
ch --query "SELECT 1" >/dev/null 2>&1 || die "ClickHouse does not answer on 127.0.0.1:$CLICKHOUSE_PORT; run: bash .ci/services.sh all"
# Row counts go over HTTP with curl when it is there (~6 ms of CPU a query; a
# clickhouse-client start costs ~35 ms).
if command -v curl >/dev/null && curl -sf "http://127.0.0.1:$CLICKHOUSE_HTTP_PORT/" --data-binary 'SELECT 1' >/dev/null 2>&1; then
    poll() { curl -sf "http://127.0.0.1:$CLICKHOUSE_HTTP_PORT/" --data-binary "$1"; }
else
    poll() { ch --query "$1"; }
fi
(exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null || die "NATS does not answer on 127.0.0.1:4222; run: bash .ci/services.sh all"

# --- the Python stack's venv, built once per set of pins -----------------------------
mkdir -p "$CACHE" "$OUT"
exec 7>"$CACHE/pystack-venv.lock"
flock -w 600 7 || die "could not take $CACHE/pystack-venv.lock"
if [ "$(cat "$VENV/.pins" 2>/dev/null || true)" != "${PINS[*]}" ] \
    || ! "$PY" -c 'import nats, clickhouse_driver' 2>/dev/null; then
    echo "== venv: ${PINS[*]} into $VENV (log: $CACHE/pystack-pip.log)"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$PY" -m pip install --disable-pip-version-check "${PINS[@]}" >"$CACHE/pystack-pip.log" 2>&1 \
        || { tail -n 20 "$CACHE/pystack-pip.log" >&2; die "pip install failed; see $CACHE/pystack-pip.log"; }
    printf '%s\n' "${PINS[*]}" >"$VENV/.pins"
fi
exec 7>&-

# shellcheck source=perf/build.sh
. perf/build.sh

# Deletes JetStream streams by name (absent ones are fine).
delete_streams() {
    "$PY" - "$@" <<'EOF'
import asyncio, os, sys
import nats
from nats.js.errors import NotFoundError

async def main():
    nc = await nats.connect(os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    js = nc.jetstream()
    for name in sys.argv[1:]:
        try:
            await js.delete_stream(name)
        except NotFoundError:
            pass
    await nc.close()

asyncio.run(main())
EOF
}

pid=
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    ch --query "DROP DATABASE IF EXISTS $DB" || true
    ch --query "DROP DATABASE IF EXISTS $PYDB" || true
    delete_streams "$STREAM" "$SIGNALS" || true
}
trap cleanup EXIT

# Percent of CPU time idle over the next second, all CPUs.
cpu_idle_pct() {
    local a b
    read -r -a a < <(grep '^cpu ' /proc/stat)
    sleep 1
    read -r -a b < <(grep '^cpu ' /proc/stat)
    local total=0 i
    for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
    echo $((100 * (b[4] - a[4] + b[5] - a[5]) / (total > 0 ? total : 1)))
}

# Waits until the CPUs are QUIET_IDLE % idle (or QUIET_WAIT_S passed); sets idle.
wait_quiet() {
    local deadline=$((SECONDS + QUIET_WAIT_S))
    idle=$(cpu_idle_pct)
    while [ "$idle" -lt "$QUIET_IDLE" ]; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "warning: CPUs only ${idle}% idle after ${QUIET_WAIT_S}s; measuring anyway" >&2
            return
        fi
        idle=$(cpu_idle_pct)
    done
}

machine="$(nproc) cores $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
commit=$BUILD
echo "== $machine, build $commit, N=$N, batches: ${batches[*]}, appliance compression $COMPRESSION"
echo "== publish: $N JSON ticks into $STREAM with $PYTHON_STACK"
"$PY" "$PYTHON_STACK" publish "$N"

# The appliance over the same stream into a fresh database with a new durable, at its
# own defaults otherwise (as perf/e2e.sh runs it); sets app_rate, and prints what it
# rejected or flagged.
run_appliance() {
    local durable=$1 count start end flags q i
    local sets=(--set "clickhouse.database=$DB" --set "nats.stream_ticks=$STREAM"
        --set 'nats.subject_ticks=pystack.ticks.>' --set "nats.stream_signals=$SIGNALS"
        --set 'nats.subject_signals=pystack.signals.>' --set "nats.durable=$durable"
        --set "clickhouse.compression=$COMPRESSION")
    ch --query "DROP DATABASE IF EXISTS $DB"
    RUST_LOG=warn "$BIN" "${sets[@]}" migrate up >/dev/null
    start=$(now)
    # `--count N`: the appliance exits once all N are stored and acked (its writers
    # then hold nothing back for more), so the process's life is the measurement.
    RUST_LOG=warn "$BIN" "${sets[@]}" run --quiet --count "$N" >"$OUT/pystack-run.txt" 2>&1 &
    pid=$!
    local deadline=$(($(date +%s) + 600))
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$(date +%s)" -gt "$deadline" ]; then
            kill -TERM "$pid"
            cat "$OUT/pystack-run.txt" >&2
            die "the appliance did not finish $N messages in 600 s; see $OUT/pystack-run.txt"
        fi
        sleep 0.02
    done
    end=$(now)
    wait "$pid" || { cat "$OUT/pystack-run.txt" >&2; die "the appliance failed; see $OUT/pystack-run.txt"; }
    pid=
    q="SELECT (SELECT count() FROM $DB.market_ticks) + (SELECT count() FROM $DB.rejected_messages)"
    [ "$(poll "$q")" -ge "$N" ] || die "the appliance exited with fewer than $N rows stored; see $OUT/pystack-run.txt"
    cat "$OUT/pystack-run.txt"
    app_rate=$(echo "$N / ($end - $start)" | bc -l)
    # Timed as python_stack.py times itself (its consume loop: connections, DDL and
    # the consumer made before, nothing after its last INSERT): the appliance's own
    # span from its first tick in to its last INSERT done.
    local span
    span=$(grep -o 'first tick in to last INSERT done in [0-9.]*' "$OUT/pystack-run.txt" | awk '{print $NF}')
    [ -n "$span" ] || die "the appliance's summary gives no first-tick-to-last-INSERT span; see $OUT/pystack-run.txt"
    app_loop_rate=$(echo "$N / $span" | bc -l)
    # Where the time went: start -> first message received, first -> last received,
    # last received -> exit (the last blocks sealed, INSERTed and acked).
    local first last
    read -r first last < <(ch --query "SELECT min(t), max(t) FROM (SELECT toUInt64(received_at) * 1000 + received_at_ms AS t FROM $DB.market_ticks)")
    app_phases=$(printf 'start-to-first %.2fs, receiving %.2fs, last-to-exit %.2fs' \
        "$(echo "$first / 1000 - $start" | bc -l)" "$(echo "($last - $first) / 1000" | bc -l)" \
        "$(echo "$end - $last / 1000" | bc -l)")
    echo "appliance: $(printf '%.2f' "$(echo "$end - $start" | bc -l)")s: $app_phases"
    count=$(ch --query "SELECT count() FROM $DB.market_ticks")
    app_rejected=$(ch --query "SELECT count() FROM $DB.rejected_messages")
    echo "appliance: $count rows in market_ticks, $app_rejected in rejected_messages"
    if [ "$app_rejected" -gt 0 ]; then
        ch --query "SELECT reason, detail, count() AS n, any(subject), substring(any(payload), 1, 200)
                    FROM $DB.rejected_messages GROUP BY reason, detail ORDER BY n DESC FORMAT PrettyCompactNoEscapes"
    fi
    q="SELECT"
    for i in "${!FLAG_NAMES[@]}"; do
        q+=" countIf(bitAnd(validation_flags, $((1 << i))) != 0),"
    done
    q+=" countIf(validation_flags = 0) FROM $DB.market_ticks"
    read -r -a counts <<<"$(ch --query "$q")"
    flags=""
    for i in "${!FLAG_NAMES[@]}"; do
        if [ "${counts[$i]}" -gt 0 ]; then flags+=" ${FLAG_NAMES[$i]}=${counts[$i]}"; fi
    done
    app_flagged="unflagged=${counts[${#FLAG_NAMES[@]}]}${flags:+ flagged:}$flags"
    echo "appliance validation_flags: $app_flagged"
}

# Rows of the appliance and of the Python stack for the same stream_seq whose values
# differ (floats by more than $1; arrays element-wise): "joined differing".
compare_rows() {
    local eps=$1 cond="" col
    near() { printf 'abs(%s - %s) <= %s' "$1" "$2" "$eps"; }
    for col in tok ex sym ts ms lq vol oi_ bq bo sq so; do cond+="$col = p_$col AND "; done
    for col in lp ap o h l c; do cond+="$(near "$col" "p_$col") AND "; done
    cond+="length(bp) = length(p_bp) AND length(sp) = length(p_sp)"
    cond+=" AND arrayAll((x, y) -> $(near x y), bp, p_bp) AND arrayAll((x, y) -> $(near x y), sp, p_sp)"
    ch --query "
SELECT count(), countIf(NOT ($cond))
FROM (SELECT stream_seq, instrument_token AS tok, exchange AS ex, tradingsymbol AS sym,
        toUnixTimestamp(timestamp) AS ts, timestamp_ms AS ms, last_price AS lp, last_quantity AS lq,
        average_price AS ap, volume_traded AS vol, open AS o, high AS h, low AS l, close AS c, oi AS oi_,
        \`depth_buy.1\` AS bp, \`depth_buy.2\` AS bq, \`depth_buy.3\` AS bo,
        \`depth_sell.1\` AS sp, \`depth_sell.2\` AS sq, \`depth_sell.3\` AS so
      FROM $DB.market_ticks)
ANY INNER JOIN
     (SELECT stream_seq, instrument_token AS p_tok, exchange AS p_ex, tradingsymbol AS p_sym,
        toUnixTimestamp(timestamp) AS p_ts, timestamp_ms AS p_ms, last_price AS p_lp, last_quantity AS p_lq,
        average_price AS p_ap, volume_traded AS p_vol, open AS p_o, high AS p_h, low AS p_l, close AS p_c,
        oi AS p_oi_, depth_buy_price AS p_bp, depth_buy_quantity AS p_bq, depth_buy_orders AS p_bo,
        depth_sell_price AS p_sp, depth_sell_quantity AS p_sq, depth_sell_orders AS p_so
      FROM $PYDB.market_ticks)
USING stream_seq"
}

summary=()
for batch in "${batches[@]}"; do
    wait_quiet
    py_idle=$idle
    echo "== python stack: consume batch $batch (new durable pystack$batch, from the stream start; CPUs ${idle}% idle before)"
    out=$("$PY" "$PYTHON_STACK" consume "$batch" "$N")
    printf '%s\n' "$out"
    line=$(grep 'python stack consume' <<<"$out") || die "python_stack.py consume printed no rate"
    py_rate=$(sed -n 's/.* \([0-9][0-9]*\) ticks\/s.*/\1/p' <<<"$line")
    stored=$(sed -n 's/.*(stored \([0-9][0-9]*\)).*/\1/p' <<<"$line")
    [ -n "$py_rate" ] || die "could not read ticks/s from: $line"
    [ "$stored" = "$N" ] || echo "warning: the Python stack stored $stored of $N ticks" >&2
    # Its many small parts would otherwise merge in the background during the appliance's
    # run; let ClickHouse finish that first (untimed). Likewise the appliance's database
    # is dropped before the next Python pass.
    ch --query "OPTIMIZE TABLE $PYDB.market_ticks FINAL"

    wait_quiet
    app_idle=$idle
    echo "== appliance: $STREAM -> ClickHouse $DB (durable alphapt-pystack-$batch, compression $COMPRESSION; CPUs ${idle}% idle before)"
    run_appliance "alphapt-pystack-$batch"
    # The same messages must give the same rows. Prices may differ in the last bit:
    # the appliance rounds to its 1e-8 fixed point (1013.19), Python keeps the float
    # the JSON spelled (1013.1899999999999).
    read -r joined differ < <(compare_rows 1e-6)
    read -r _ differ_exact < <(compare_rows 0)
    echo "appliance vs python rows by stream_seq: $joined joined, $differ differ (prices beyond 1e-6), $differ_exact with any float not bit-identical"
    if [ "$joined" != "$N" ] || [ "$differ" != 0 ]; then
        echo "warning: the appliance's rows do not match the Python stack's" >&2
    fi
    ch --query "DROP DATABASE IF EXISTS $DB"
    ratio=$(echo "$app_rate / $py_rate" | bc -l)
    loop_ratio=$(echo "$app_loop_rate / $py_rate" | bc -l)
    summary+=("$(printf 'batch %-6s python %8.0f ticks/s | appliance %8.0f ticks/s whole process, ratio %6.1f | %8.0f ticks/s first tick in to last INSERT (as python times its loop), ratio %6.1f' \
        "$batch" "$py_rate" "$app_rate" "$ratio" "$app_loop_rate" "$loop_ratio")")
    # The box is shared: the 1-minute load average says how quiet it was.
    printf '%s\t%s\t%s\tN=%s\tbatch=%s\t%s\t%.0f\t%.0f\t%.1f\t%s\trejected=%s %s\n' \
        "$(date -u +%FT%TZ)" "$commit" "$machine" "$N" "$batch" "$COMPRESSION" \
        "$py_rate" "$app_rate" "$ratio" "$(cut -d' ' -f1 /proc/loadavg)" \
        "$app_rejected" "$app_flagged; differ=$differ; $app_phases; loop-timed $(printf '%.0f' "$app_loop_rate") ticks/s ratio $(printf '%.1f' "$loop_ratio"); idle before python ${py_idle}% appliance ${app_idle}%" >>perf/records/python_stack.tsv
done

echo "== appliance / Python stack, same $N messages ($machine; load average $(cut -d' ' -f1-3 /proc/loadavg))"
printf '%s\n' "${summary[@]}"
