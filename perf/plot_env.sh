#!/usr/bin/env bash
# Prints the path of a python with matplotlib (pinned) for perf/plot_latency.py:
#     "$(bash perf/plot_env.sh)" perf/plot_latency.py REPORT ...
# (sourced, it also sets PLOT_PY). The venv is made once in
# ${XDG_CACHE_HOME:-~/.cache}/alphapt-storage/plot-venv, pip's log beside it as
# plot-pip.log. The first call needs PyPI; only perf uses it, never `make test`.
# Fails (exit or return 1, the reason on stderr) when no venv can be made.

_plot_env() {
    local pin=matplotlib==3.10.8
    local cache="${XDG_CACHE_HOME:-$HOME/.cache}/alphapt-storage"
    local venv="$cache/plot-venv" log="$cache/plot-pip.log"
    local py="$venv/bin/python"
    local check="import matplotlib, sys; sys.exit(matplotlib.__version__ != '${pin#*==}')"
    # Checked one by one, not by set -e: sourced, this runs under the caller's options.
    mkdir -p "$cache" || return 1
    # Two perf scripts at once must not pip into one venv together.
    exec 9>"$cache/plot-venv.lock"
    flock -w 600 9 || { echo "plot_env: could not take $cache/plot-venv.lock" >&2; return 1; }
    if ! "$py" -c "$check" 2>/dev/null; then
        if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
            local v
            v=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
            echo "plot_env: python3 has no venv module; install the apt package" \
                "python3-venv${v:+ (python$v-venv)}" >&2
            return 1
        fi
        echo "plot_env: installing $pin into $venv (log: $log)" >&2
        # --clear: a venv left by an older python3 may not run at all.
        { "$py" -c '' 2>/dev/null || python3 -m venv --clear "$venv"; } >"$log" 2>&1 \
            && "$py" -m pip install --disable-pip-version-check "$pin" >>"$log" 2>&1 \
            && "$py" -c "$check" >>"$log" 2>&1 \
            || { echo "plot_env: installing $pin failed (no PyPI?); see $log" >&2; return 1; }
    fi
    echo "$py"
}

# The subshell keeps the lock's descriptor and a failure away from a sourcing shell.
if PLOT_PY=$(_plot_env); then
    unset -f _plot_env
    echo "$PLOT_PY"
else
    unset -f _plot_env; unset PLOT_PY
    return 1 2>/dev/null || exit 1
fi
