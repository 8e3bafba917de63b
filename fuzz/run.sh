#!/usr/bin/env bash
# Builds the fuzz targets and runs each for a short, fixed time.
#
#   fuzz/run.sh [SECONDS] [TARGET...]     (default: 30 seconds, every target)
#
# Targets run one after another (the box is shared: one core each, never more).
# Each run starts from the tracked seeds in fuzz/seeds/<target>/ and grows the
# untracked scratch corpus fuzz/corpus/<target>/ (kept between runs, gitignored).
# Prints one summary line per target:
#   <target>  ok|FAIL  execs=N  exec/s=N  cov=N  ft=N  corpus=N  [artifact=PATH]
# and exits non-zero when any target found something (a panic, a sanitizer report,
# an allocation over -malloc_limit_mb, a timeout or a leak); the crash input is
# kept under fuzz/artifacts/<target>/ and its path printed. Full libFuzzer output
# is in fuzz/logs/<target>.log.
#
# Environment:
#   FUZZ_NO_BUILD=1     skip `cargo fuzz build` (reuse the last build)
#   FUZZ_EXTRA="..."    extra libFuzzer flags for every target (e.g. -seed=1)
#   FUZZ_MALLOC_LIMIT_MB=N   largest single allocation allowed (default 256: the
#                       limit is "below N MiB", so a 256 MiB allocation trips it)
#   FUZZ_SKIP_KNOWN=1   pass over inputs that would only hit an already reported
#                       bug (each target's known_* filter), to look for the next one
#
# Reproduce a finding:   fuzz/target/x86_64-unknown-linux-gnu/release/<target> -malloc_limit_mb=256 <artifact>
#                        (or: cd fuzz && cargo +nightly fuzz run -O -a <target> <artifact> -- -malloc_limit_mb=256)
# Minimise it:           cd fuzz && cargo +nightly fuzz tmin -O -a <target> <artifact> -- -malloc_limit_mb=256
#                        (or the binary with -minimize_crash=1 -runs=5000 -exact_artifact_path=<out> <artifact>)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

seconds="${1:-30}"
shift || true
case "$seconds" in
    '' | *[!0-9]*) echo "usage: fuzz/run.sh [SECONDS] [TARGET...]" >&2; exit 2 ;;
esac

all_targets=(json_tick json_signal kite nats_wire native_block spill_record spill_journal migration_split)
if [ "$#" -gt 0 ]; then targets=("$@"); else targets=("${all_targets[@]}"); fi

# Per-target libFuzzer options: the JSON parsers refuse payloads over 16 KiB, so
# their inputs may grow past that; the others stay small (the NATS target can repeat
# its input past the 64 KiB control-line limit itself).
target_flags() {
    case "$1" in
        json_tick | json_signal) echo "-max_len=20000 -dict=$here/dicts/json.dict" ;;
        nats_wire) echo "-max_len=8192 -dict=$here/dicts/nats.dict" ;;
        native_block) echo "-max_len=8192 -dict=$here/dicts/native.dict" ;;
        migration_split) echo "-max_len=8192 -dict=$here/dicts/sql.dict" ;;
        kite) echo "-max_len=4096" ;;
        *) echo "-max_len=8192" ;;
    esac
}

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
    exit 2
fi
if [ "${FUZZ_NO_BUILD:-0}" != 1 ]; then
    # -O -a: optimised, with debug assertions and overflow checks (the parsers'
    # debug_assert!s are part of what is checked); AddressSanitizer by default.
    if [ "${#targets[@]}" -eq 1 ]; then
        cargo +nightly fuzz build -O -a "${targets[0]}"
    else
        cargo +nightly fuzz build -O -a
    fi
fi

triple="$(rustc +nightly -vV | sed -n 's/^host: //p')"
bin_dir="$here/target/$triple/release"
mkdir -p "$here/logs"

failed=0
for target in "${targets[@]}"; do
    bin="$bin_dir/$target"
    if [ ! -x "$bin" ]; then
        echo "$target  FAIL  no binary at $bin (unknown target?)"
        failed=1
        continue
    fi
    corpus="$here/corpus/$target"
    artifacts="$here/artifacts/$target"
    log="$here/logs/$target.log"
    mkdir -p "$corpus" "$artifacts"
    set +e
    export ALPHAPT_FUZZ_SKIP_KNOWN="${FUZZ_SKIP_KNOWN:-0}"
    # shellcheck disable=SC2046,SC2086
    "$bin" "$corpus" "$here/seeds/$target" \
        -max_total_time="$seconds" \
        -malloc_limit_mb="${FUZZ_MALLOC_LIMIT_MB:-256}" \
        -rss_limit_mb=2048 \
        -timeout=10 \
        -print_final_stats=1 \
        -artifact_prefix="$artifacts/" \
        $(target_flags "$target") ${FUZZ_EXTRA:-} \
        >"$log" 2>&1 &
    pid=$!
    wait "$pid"
    status=$?
    # spill_journal's scratch directory, named by its process id.
    rm -rf "/dev/shm/alphapt-fuzz-journal-$pid" "${TMPDIR:-/tmp}/alphapt-fuzz-journal-$pid"
    set -e
    final_stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -n 1; }
    execs="$(final_stat number_of_executed_units)"
    rate="$(final_stat average_exec_per_sec)"
    last="$(grep -E '^#[0-9]+' "$log" | grep 'cov:' | tail -n 1 || true)"
    cov="$(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<<"$last")"
    ft="$(sed -n 's/.*ft: \([0-9]*\).*/\1/p' <<<"$last")"
    corp="$(sed -n 's/.*corp: \([0-9]*\).*/\1/p' <<<"$last")"
    if [ -z "$execs" ]; then execs="$(sed -n 's/^#\([0-9]*\).*/\1/p' <<<"$last")"; fi
    line="$(printf '%-16s' "$target")"
    if [ "$status" -eq 0 ]; then
        echo "$line ok    execs=${execs:-?} exec/s=${rate:-?} cov=${cov:-?} ft=${ft:-?} corpus=${corp:-?}"
    else
        failed=1
        artifact="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)"
        kind="$(grep -m1 -oE 'ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer): [a-zA-Z-]+|panicked at [^:]+:[0-9]+' "$log" || echo "exit $status")"
        echo "$line FAIL  execs=${execs:-?} exec/s=${rate:-?} cov=${cov:-?} ft=${ft:-?} corpus=${corp:-?} ($kind) artifact=${artifact:-none} log=$log"
    fi
done
exit "$failed"
