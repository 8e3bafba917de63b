#!/usr/bin/env bash
# Bring up, on loopback, every service the tests and `make run` need:
# PostgreSQL, Redis, NATS (JetStream), ClickHouse 18.16 (our own process,
# config and data under .run/clickhouse/) and a Python venv with chdb; installs
# promtool and ZooKeeper's jars (no ZooKeeper service: tests start their own).
# Idempotent: a service that already answers is left alone.
#
#   services.sh [all]            everything (default)
#   services.sh start-clickhouse start our ClickHouse if it does not answer
#   services.sh stop-clickhouse  stop our ClickHouse (pid file in .run/clickhouse/)
#   services.sh env              print `export VAR=value` lines for the tests
#
# Env: CLICKHOUSE_PORT (9000), CLICKHOUSE_HTTP_PORT (8123),
#      CLICKHOUSE_LOG_LEVEL (warning), SERVICES_WAIT_SECONDS (60).
# Never calls `clickhouse-client --help`: on 18.16 it prints blank lines forever.
set -euo pipefail

CI_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$CI_DIR/.." && pwd)
SELF="$CI_DIR/$(basename "${BASH_SOURCE[0]}")"
RUN="$ROOT/.run"
CH_RUN="$RUN/clickhouse"
CH_PORT=${CLICKHOUSE_PORT:-9000}
CH_HTTP_PORT=${CLICKHOUSE_HTTP_PORT:-8123}
CH_SECURE_PORT=${CLICKHOUSE_SECURE_PORT:-9440}
# A throwaway CA and a server certificate for 127.0.0.1/localhost, for the TLS tests:
# outside the checkout, so every checkout on the machine (and the ClickHouse one of them
# started) uses the same files.
TLS_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/alphapt-storage/tls"
CH_LOG_LEVEL=${CLICKHOUSE_LOG_LEVEL:-warning}
CH_PID="$CH_RUN/clickhouse-server.pid"
CH_ERRLOG="$CH_RUN/log/clickhouse-server.err.log"
WAIT=${SERVICES_WAIT_SECONDS:-60}
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/alphapt-storage"
VENV="$CACHE/venv"
CHDB_PKG=chdb-core
CHDB_VERSION=26.9.0

say() { printf '%s\n' "$*"; }
die() { printf 'services.sh: error: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

# --- apt ------------------------------------------------------------------
APT_UPDATED=0
apt_install() {
    local log="$RUN/apt.log" made_policy=0 rc=0
    export DEBIAN_FRONTEND=noninteractive
    mkdir -p "$RUN"
    say "installing: $* (log: $log)"
    # Packages must not start their system services: we start our own.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    if [ "$APT_UPDATED" = 0 ]; then
        apt-get update >>"$log" 2>&1 || rc=$?
        APT_UPDATED=1
    fi
    if [ "$rc" = 0 ]; then
        apt-get install -y --no-install-recommends "$@" >>"$log" 2>&1 || rc=$?
    fi
    if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
    if [ "$rc" != 0 ]; then
        tail -n 30 "$log" >&2
        die "apt-get install $* failed (exit $rc); see $log"
    fi
}

# wait_for NAME LOGFILE CMD...: poll CMD until it succeeds, at most $WAIT s.
wait_for() {
    local name=$1 logf=$2 deadline=$((SECONDS + WAIT))
    shift 2
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            [ -f "$logf" ] && tail -n 20 "$logf" >&2
            die "$name did not answer within ${WAIT}s; see $logf"
        fi
        sleep 0.25
    done
}

# Start CMD... detached (own session, no stdin, output to LOG, lock fd closed).
spawn() {
    local logf=$1
    shift
    setsid nohup "$@" </dev/null >>"$logf" 2>&1 9>&- &
    SPAWNED=$!
}

# --- PostgreSQL -------------------------------------------------------------
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432; }
svc_postgres() {
    local ver state="already running"
    if ! have pg_isready || ! have pg_ctlcluster || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
        apt_install postgresql
    fi
    # shellcheck disable=SC2012 # version directory names are plain
    ver=$(ls /etc/postgresql | sort -V | tail -n 1)
    if ! pg_up; then
        pg_ctlcluster --skip-systemctl-redirect "$ver" main start 9>&- || true
        wait_for postgresql "/var/log/postgresql/postgresql-$ver-main.log" pg_up
        state=started
    fi
    say "postgresql: up ($ver) on 127.0.0.1:5432 [$state]"
}

# --- Redis --------------------------------------------------------------------
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; }
svc_redis() {
    local state="already running" ver
    if ! have redis-server || ! have redis-cli; then apt_install redis-server; fi
    if ! redis_up; then
        mkdir -p "$RUN/redis"
        redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
            --dir "$RUN/redis" --logfile "$RUN/redis/redis.log" 9>&-
        wait_for redis "$RUN/redis/redis.log" redis_up
        state=started
    fi
    ver=$(redis-cli -h 127.0.0.1 -p 6379 info server | tr -d '\r' | sed -n 's/^redis_version://p')
    say "redis: up ($ver) on 127.0.0.1:6379 [$state]"
}

# --- NATS -----------------------------------------------------------------------
# Prints the server's INFO line; fails if nothing on the port sends one.
nats_info() {
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/4222 && IFS= read -r -t 3 line <&3 &&
        [[ $line == INFO* ]] && printf "%s\n" "$line"' 2>/dev/null
}
svc_nats() {
    local state="already running" ver
    if ! have nats-server; then apt_install nats-server; fi
    if ! nats_info >/dev/null; then
        mkdir -p "$RUN/nats/store"
        spawn "$RUN/nats/nats.log" nats-server -a 127.0.0.1 -p 4222 -js -sd "$RUN/nats/store"
        wait_for nats "$RUN/nats/nats.log" nats_info
        state="started, pid $SPAWNED"
    fi
    ver=$(nats_info | sed -n 's/.*"version":"\([^"]*\)".*/\1/p')
    say "nats: up ($ver, jetstream) on 127.0.0.1:4222 [$state]"
}

# --- ClickHouse 18.16 -------------------------------------------------------------
ch_version() {
    timeout 5 clickhouse-client --host 127.0.0.1 --port "$CH_PORT" --query 'SELECT version()' 2>/dev/null
}
ch_up() { ch_version >/dev/null; }
# Pid of our server from the pid file, if that process is alive and is ClickHouse.
ch_pid() {
    local pid
    [ -s "$CH_PID" ] || return 1
    pid=$(tr -dc '0-9' <"$CH_PID")
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q clickhouse || return 1
    printf '%s\n' "$pid"
}
# The test CA (ca.pem), a server certificate for 127.0.0.1 and localhost signed by it
# (server.pem, server.key), DH parameters (18.16's TLS port needs them) and a client
# certificate signed by the same CA (client.pem, client.key; the TLS servers of the
# tests require one): made once, the client pair added to a directory made before it.
tls_files() {
    [ -s "$TLS_DIR/dh.pem" ] && [ -s "$TLS_DIR/client.pem" ] && return 0
    have openssl || apt_install openssl
    mkdir -p "$TLS_DIR"
    (
        cd "$TLS_DIR"
        if [ ! -s dh.pem ]; then
            openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=alphapt test CA" \
                -keyout ca.key -out ca.pem
            openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr
            printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >server.ext
            openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
                -extfile server.ext -out server.pem
            openssl dhparam -dsaparam -out dh.pem.new 2048 && mv dh.pem.new dh.pem
        fi
        # CN postgres: PostgreSQL's clientcert=verify-full matches it to the user name.
        openssl req -newkey rsa:2048 -nodes -subj "/CN=postgres" -keyout client.key -out client.csr
        printf 'extendedKeyUsage=clientAuth\n' >client.ext
        openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
            -extfile client.ext -out client.pem.new && mv client.pem.new client.pem
        chmod 600 ca.key server.key client.key
    ) >"$TLS_DIR/openssl.log" 2>&1 || die "making the test certificates failed; see $TLS_DIR/openssl.log"
}
ch_render() {
    mkdir -p "$CH_RUN"/{data,tmp,user_files,format_schemas,log}
    tls_files
    sed -e "s|@RUN_DIR@|$CH_RUN|g" -e "s|@TCP_PORT@|$CH_PORT|g" \
        -e "s|@TLS_DIR@|$TLS_DIR|g" -e "s|@TCP_SECURE_PORT@|$CH_SECURE_PORT|g" \
        -e "s|@HTTP_PORT@|$CH_HTTP_PORT|g" -e "s|@LOG_LEVEL@|$CH_LOG_LEVEL|g" \
        "$CI_DIR/clickhouse/config.xml" >"$CH_RUN/config.xml.new"
    mv -f "$CH_RUN/config.xml.new" "$CH_RUN/config.xml"
    cp -f "$CI_DIR/clickhouse/users.xml" "$CH_RUN/users.xml.new"
    mv -f "$CH_RUN/users.xml.new" "$CH_RUN/users.xml"
}
ch_starting_ok() {
    # Fail the wait early if the server we spawned has exited.
    if [ -n "${SPAWNED:-}" ] && ! kill -0 "$SPAWNED" 2>/dev/null; then
        return 0
    fi
    ch_up
}
start_clickhouse() {
    local state="already running" pid
    # A running server re-reads users.xml when it changes (18.16 checks every few
    # seconds): keep it current without a restart.
    if [ -s "$CH_RUN/users.xml" ] && ! cmp -s "$CI_DIR/clickhouse/users.xml" "$CH_RUN/users.xml"; then
        cp -f "$CI_DIR/clickhouse/users.xml" "$CH_RUN/users.xml.new"
        mv -f "$CH_RUN/users.xml.new" "$CH_RUN/users.xml"
    fi
    if ! have clickhouse-server || ! have clickhouse-client; then
        apt_install clickhouse-server clickhouse-client
    fi
    if ! ch_up; then
        SPAWNED=
        if pid=$(ch_pid); then
            state="started earlier, pid $pid" # still starting up: just wait
        else
            rm -f "$CH_PID"
            ch_render
            # Not --daemon: without it 18.16 ignores --pid-file, so we keep the pid.
            spawn "$CH_RUN/log/stdout.log" clickhouse-server --config-file="$CH_RUN/config.xml"
            echo "$SPAWNED" >"$CH_PID"
            state="started, pid $SPAWNED"
        fi
        wait_for clickhouse "$CH_ERRLOG" ch_starting_ok
        if [ -n "$SPAWNED" ] && ! kill -0 "$SPAWNED" 2>/dev/null; then
            rm -f "$CH_PID"
            grep -a '<Error>' "$CH_ERRLOG" 2>/dev/null | tail -n 3 >&2 || true
            die "clickhouse exited during start-up; see $CH_ERRLOG and $CH_RUN/log/stdout.log"
        fi
    elif ! ch_pid >/dev/null; then
        state="already running, not ours: no pid file in $CH_RUN"
    fi
    say "clickhouse: up ($(ch_version)) on 127.0.0.1:$CH_PORT [$state]"
}
stop_clickhouse() {
    local pid deadline
    if ! pid=$(ch_pid); then
        # Pid file lost: look for a server running our rendered config.
        pid=$(pgrep -f -- "--config-file=$CH_RUN/config.xml" | head -n 1 || true)
    fi
    if [ -z "$pid" ]; then
        rm -f "$CH_PID"
        say "clickhouse: not running (ours)"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + WAIT))
    while [ -e "/proc/$pid" ] && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    if [ -e "/proc/$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; fi
    while [ -e "/proc/$pid" ]; do sleep 0.1; done
    rm -f "$CH_PID"
    say "clickhouse: stopped (pid $pid)"
}

# --- chdb (ClickHouse 26.x in-process, for conformance tests) ------------------------
chdb_version() {
    [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c \
        'import chdb, importlib.metadata as m; print(m.version("'"$CHDB_PKG"'"))' 2>/dev/null
}
svc_chdb() {
    local state="cached" log="$CACHE/pip.log"
    if [ "$(chdb_version || true)" != "$CHDB_VERSION" ]; then
        if ! have python3 || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
            apt_install python3 python3-venv
        fi
        mkdir -p "$CACHE"
        rm -rf "$VENV"
        python3 -m venv "$VENV"
        say "installing: $CHDB_PKG==$CHDB_VERSION into $VENV (log: $log)"
        if ! "$VENV/bin/python" -m pip install --disable-pip-version-check \
            "$CHDB_PKG==$CHDB_VERSION" >"$log" 2>&1; then
            tail -n 20 "$log" >&2
            die "pip install $CHDB_PKG==$CHDB_VERSION failed; see $log"
        fi
        [ "$(chdb_version || true)" = "$CHDB_VERSION" ] || die "chdb does not import from $VENV; see $log"
        state=installed
    fi
    say "chdb: ready ($CHDB_PKG $CHDB_VERSION) at $VENV/bin/python [$state]"
}

# --- promtool (Debian's prometheus package: checks our metrics and alert rules) -----
svc_promtool() {
    local state=present
    if ! have promtool; then
        apt_install prometheus
        state=installed
    fi
    have promtool || die "promtool not on PATH after installing prometheus"
    say "promtool: ready ($(promtool --version 2>&1 | head -n 1)) [$state]"
}

# --- ZooKeeper (Debian's package: only its jars; tests start their own servers) -------
# ReplicatedMergeTree on 18.16 needs ZooKeeper. No system service is started or relied
# on: tests/common/private_clickhouse.rs runs a private one per test as a java process.
# The tests' classpath: zookeeper.jar (its manifest names its dependencies) and
# slf4j-simple.jar (libslf4j-java, one of them) for its log.
ZK_JAR=/usr/share/java/zookeeper.jar
ZK_LOG_JAR=/usr/share/java/slf4j-simple.jar
svc_zookeeper() {
    local state=present ver
    if [ ! -e "$ZK_JAR" ] || [ ! -e "$ZK_LOG_JAR" ] || ! have java; then
        apt_install zookeeper
        state=installed
    fi
    [ -e "$ZK_JAR" ] && [ -e "$ZK_LOG_JAR" ] || die "$ZK_JAR or $ZK_LOG_JAR missing after installing zookeeper"
    # shellcheck disable=SC2016 # a dpkg-query format, not a shell expansion
    ver=$(dpkg-query -W -f '${Version}' libzookeeper-java 2>/dev/null || echo unknown)
    say "zookeeper: ready ($ver) at $ZK_JAR, not a service: tests start their own [$state]"
}

print_env() {
    local kv
    for kv in \
        "CLICKHOUSE_HOST=127.0.0.1" \
        "CLICKHOUSE_PORT=$CH_PORT" \
        "CLICKHOUSE_HTTP_PORT=$CH_HTTP_PORT" \
        "CLICKHOUSE_SECURE_PORT=$CH_SECURE_PORT" \
        "ALPHAPT_TEST_TLS_DIR=$TLS_DIR" \
        "ALPHAPT_CHDB_PYTHON=$VENV/bin/python" \
        "NATS_URL=nats://127.0.0.1:4222" \
        "REDIS_URL=redis://127.0.0.1:6379" \
        "POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres" \
        "ALPHAPT_SERVICES_SH=$SELF"; do
        printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"
    done
}

# One caller at a time changes services (tests may restart ClickHouse in parallel).
lock() {
    mkdir -p "$RUN"
    exec 9>"$RUN/services.lock"
    flock -w 300 9 || die "could not take $RUN/services.lock"
}

cmd=${1:-all}
case "$cmd" in
all)
    lock
    tls_files
    svc_postgres
    svc_redis
    svc_nats
    svc_promtool
    svc_zookeeper
    start_clickhouse
    # chdb's cache lives outside the repo; serialise its creation too.
    mkdir -p "$CACHE"
    exec 8>"$CACHE/venv.lock"
    flock -w 600 8 || die "could not take $CACHE/venv.lock"
    svc_chdb
    ;;
start-clickhouse) lock && start_clickhouse ;;
stop-clickhouse) lock && stop_clickhouse ;;
env) print_env ;;
*)
    printf 'usage: %s [all|start-clickhouse|stop-clickhouse|env]\n' "$0" >&2
    exit 2
    ;;
esac
