#!/usr/bin/env bash
# Load test: pgbench against PostgreSQL directly, through switchyard and
# through PgBouncer (both in session mode, or both in transaction mode with
# MODE=transaction), all in front of the same local
# primary started by `switchyard demo`.
#
# Usage: benches/load.sh [DURATION_SECONDS=20] [CLIENTS=16]
#
# For each pgbench script (select-only `-S`, then the default TPC-B-like one)
# and each target it runs a 3 s warm-up, then
#     pgbench [-S] -c CLIENTS -j 2 -T DURATION -n
# and prints TPS and, for the proxies, the CPU time (utime + stime from
# /proc/PID/stat, in seconds) the proxy process used during the run, absolute
# and per 1000 transactions.
#
# Needs root on Debian 12 with Rust and the PostgreSQL 15 server binaries;
# installs pgbouncer (and the PostgreSQL client tools if missing) with apt-get.
# Listens and connects on 127.0.0.1 only. Environment knobs:
#   SWITCHYARD_BIN  switchyard binary (default: target/release/switchyard,
#                   built with `cargo build --release` when missing)
#   KEEP_TMP=1      keep the temporary directory (pgbench/pgbouncer/demo logs)
#   MODE            session (default) or transaction: both proxies' pool mode
#   ROUNDS          select-only runs of switchyard and PgBouncer, alternating
#                   (default 1); with more than one, a mean row per proxy
#                   follows (one run on this 2-core box varies by ±10 %)
#   POOL            server connections per pool in transaction mode (default 10)
#   SWITCHYARD_SERVER_WORKER_THREADS  switchyard's worker threads (default:
#                   one per core); any SWITCHYARD_* variable reaches the demo
set -euo pipefail

DURATION=${1:-20}
CLIENTS=${2:-16}
MODE=${MODE:-session}
POOL=${POOL:-10}
ROUNDS=${ROUNDS:-1}
if [[ $MODE != session && $MODE != transaction ]]; then
    echo "error: MODE must be session or transaction" >&2
    exit 2
fi
THREADS=2
WARMUP=3
SCALE=10

if ! [[ $DURATION =~ ^[1-9][0-9]*$ && $CLIENTS =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [DURATION_SECONDS=20] [CLIENTS=16]" >&2
    exit 2
fi
if (( CLIENTS < THREADS )); then
    THREADS=$CLIENTS
fi
if ! [[ $ROUNDS =~ ^[1-9][0-9]?$ ]]; then
    echo "error: ROUNDS must be 1 to 99" >&2
    exit 2
fi
if (( DURATION > 120 || CLIENTS > 150 )); then
    echo "error: DURATION at most 120 s and CLIENTS at most 150 (the demo's max_connections is 200)" >&2
    exit 2
fi
if (( EUID != 0 )); then
    echo "error: run as root (installs packages, runs PgBouncer as switchyard-pg)" >&2
    exit 2
fi

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${SWITCHYARD_BIN:-$REPO/target/release/switchyard}

log() { printf '==> %s\n' "$*" >&2; }

# --- prerequisites --------------------------------------------------------

APT_UPDATED=0
apt_install() {
    if (( ! APT_UPDATED )); then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

# PostgreSQL client tools: the versioned binaries, not the pg_wrapper in /usr/bin.
find_pgbin() {
    local dir
    for dir in /usr/lib/postgresql/15/bin $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -rV); do
        if [[ -x $dir/pgbench && -x $dir/psql ]]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}
if ! PGBIN=$(find_pgbin); then
    log "installing the PostgreSQL 15 client tools"
    apt_install postgresql-15 postgresql-client-15
    PGBIN=$(find_pgbin)
fi
PGBENCH=$PGBIN/pgbench
PSQL=$PGBIN/psql

if ! command -v pgbouncer >/dev/null 2>&1; then
    log "installing pgbouncer"
    # Keep the package's own service from starting (it would listen on 6432).
    POLICY_RC=/usr/sbin/policy-rc.d
    REMOVE_POLICY=0
    if [[ ! -e $POLICY_RC ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$POLICY_RC"
        chmod 755 "$POLICY_RC"
        REMOVE_POLICY=1
    fi
    apt_install pgbouncer
    if (( REMOVE_POLICY )); then rm -f "$POLICY_RC"; fi
fi
PGBOUNCER=$(command -v pgbouncer)

for tool in getconf runuser awk; do
    command -v "$tool" >/dev/null || { echo "error: $tool not found" >&2; exit 1; }
done
CLK_TCK=$(getconf CLK_TCK)

if [[ ! -x $BIN ]]; then
    log "building switchyard (cargo build --release)"
    (cd "$REPO" && cargo build --release)
fi

# --- state and cleanup ----------------------------------------------------

TMP=$(mktemp -d /tmp/switchyard-load.XXXXXX)
chmod 755 "$TMP"
DEMO_PID=
PGB_PID=

cleanup() {
    local rc=$?
    set +e
    if [[ -n $PGB_PID ]] && kill -0 "$PGB_PID" 2>/dev/null; then
        kill -TERM "$PGB_PID" 2>/dev/null
        wait "$PGB_PID" 2>/dev/null
    fi
    if [[ -n $DEMO_PID ]] && kill -0 "$DEMO_PID" 2>/dev/null; then
        log "stopping switchyard demo (pid $DEMO_PID)"
        kill -INT "$DEMO_PID" 2>/dev/null
        local i
        for (( i = 0; i < 900; i++ )); do
            kill -0 "$DEMO_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$DEMO_PID" 2>/dev/null; then
            echo "warning: the demo did not stop in 90 s; sending SIGTERM" >&2
            kill -TERM "$DEMO_PID" 2>/dev/null
            sleep 10
            kill -0 "$DEMO_PID" 2>/dev/null && kill -KILL "$DEMO_PID" 2>/dev/null
        fi
        wait "$DEMO_PID" 2>/dev/null
    fi
    if (( rc != 0 )); then
        local f
        for f in "$TMP"/demo.out "$TMP"/demo.err "$TMP"/pgbouncer.log "$TMP"/pgbouncer.stderr "$TMP"/pgbench-*.out; do
            [[ -s $f ]] || continue
            echo "--- tail of $f" >&2
            tail -n 20 "$f" >&2
        done
    fi
    if [[ ${KEEP_TMP:-0} == 1 || $rc != 0 ]]; then
        echo "logs kept in $TMP" >&2
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- helpers --------------------------------------------------------------

# utime and stime of a process, in clock ticks (all threads), space-separated.
cpu_ticks() {
    local stat rest f
    stat=$(<"/proc/$1/stat")
    rest=${stat##*) }          # fields from 3 (state) on; comm may hold spaces
    read -ra f <<<"$rest"
    echo "${f[11]} ${f[12]}"   # fields 14 (utime) and 15 (stime)
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_port() {
    local p
    for (( p = 16432; p < 16532; p++ )); do
        if ! port_in_use "$p"; then echo "$p"; return 0; fi
    done
    echo "error: no free port in 16432-16531" >&2
    return 1
}

# run_pgbench NAME PORT SECONDS [pgbench args...]: output in $TMP/pgbench-NAME.out
run_pgbench() {
    local name=$1 port=$2 secs=$3
    shift 3
    local out=$TMP/pgbench-$name.out
    if ! PGPASSWORD=app-secret PGSSLMODE=disable "$PGBENCH" -h 127.0.0.1 -p "$port" -U app \
            "$@" -c "$CLIENTS" -j "$THREADS" -T "$secs" -n appdb >"$out" 2>&1; then
        echo "error: pgbench $name failed:" >&2
        cat "$out" >&2
        return 1
    fi
    if grep -q "aborted" "$out"; then
        echo "error: pgbench $name: clients aborted:" >&2
        cat "$out" >&2
        return 1
    fi
}

# --- start the cluster and switchyard -------------------------------------

log "starting switchyard demo ($BIN, $MODE pooling)"
if [[ $MODE == transaction ]]; then
    export SWITCHYARD_SERVER_POOL_MODE=transaction SWITCHYARD_POOL_MAX_SIZE=$POOL
fi
"$BIN" demo >"$TMP/demo.out" 2>"$TMP/demo.err" &
DEMO_PID=$!

for (( i = 0; i < 600; i++ )); do
    grep -q '^postgres://' "$TMP/demo.out" 2>/dev/null && break
    if ! kill -0 "$DEMO_PID" 2>/dev/null; then
        echo "error: switchyard demo exited early" >&2
        exit 1
    fi
    sleep 0.1
done
if ! grep -q '^postgres://' "$TMP/demo.out"; then
    echo "error: switchyard demo did not print its URL within 60 s" >&2
    exit 1
fi

PROXY_URL=$(grep -m1 '^postgres://' "$TMP/demo.out")
SY_PORT=$(sed -E 's|^postgres://[^@]*@127\.0\.0\.1:([0-9]+)/.*$|\1|' <<<"$PROXY_URL")
PRIMARY=$(awk '$1 == "primary" { print $2; exit }' "$TMP/demo.out")
PRIMARY_HOST=${PRIMARY%:*}
PRIMARY_PORT=${PRIMARY##*:}
if ! [[ $SY_PORT =~ ^[0-9]+$ && $PRIMARY_PORT =~ ^[0-9]+$ && $PRIMARY_HOST == 127.0.0.1 ]]; then
    echo "error: cannot parse the demo output:" >&2
    cat "$TMP/demo.out" >&2
    exit 1
fi
log "primary $PRIMARY, switchyard 127.0.0.1:$SY_PORT (pid $DEMO_PID)"

log "pgbench -i -s $SCALE on the primary"
PGPASSWORD=app-secret PGSSLMODE=disable "$PGBENCH" -h 127.0.0.1 -p "$PRIMARY_PORT" -U app \
    -i -s "$SCALE" -q appdb >"$TMP/pgbench-init.out" 2>&1 \
    || { cat "$TMP/pgbench-init.out" >&2; exit 1; }

# --- PgBouncer ------------------------------------------------------------

id switchyard-pg >/dev/null 2>&1 || { echo "error: OS user switchyard-pg missing" >&2; exit 1; }
PGB_PORT=$(free_port)
PGB_DIR=$TMP/pgbouncer
mkdir -p "$PGB_DIR"
POOL_SIZE=$(( CLIENTS > 20 ? CLIENTS : 20 ))
if [[ $MODE == transaction ]]; then
    POOL_SIZE=$POOL
fi
MAX_CLIENT=$(( CLIENTS * 2 > 100 ? CLIENTS * 2 : 100 ))
cat >"$PGB_DIR/userlist.txt" <<'EOF'
"app" "app-secret"
EOF
cat >"$PGB_DIR/pgbouncer.ini" <<EOF
[databases]
appdb = host=$PRIMARY_HOST port=$PRIMARY_PORT dbname=appdb

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $PGB_DIR/userlist.txt
pool_mode = $MODE
max_client_conn = $MAX_CLIENT
default_pool_size = $POOL_SIZE
logfile = $TMP/pgbouncer.log
pidfile = $PGB_DIR/pgbouncer.pid
ignore_startup_parameters = extra_float_digits
EOF
chown -R switchyard-pg: "$PGB_DIR"
chmod 700 "$PGB_DIR"
touch "$TMP/pgbouncer.log"
chown switchyard-pg: "$TMP/pgbouncer.log"

log "starting pgbouncer on 127.0.0.1:$PGB_PORT as switchyard-pg"
# -u: starts as root, switches to switchyard-pg in the same process, so $! is
# the pgbouncer process whose CPU we read.
"$PGBOUNCER" -u switchyard-pg "$PGB_DIR/pgbouncer.ini" >"$TMP/pgbouncer.stderr" 2>&1 &
PGB_PID=$!
for (( i = 0; i < 100; i++ )); do
    port_in_use "$PGB_PORT" && break
    kill -0 "$PGB_PID" 2>/dev/null || { echo "error: pgbouncer exited" >&2; exit 1; }
    sleep 0.1
done
port_in_use "$PGB_PORT" || { echo "error: pgbouncer is not listening" >&2; exit 1; }
[[ $(<"/proc/$PGB_PID/comm") == pgbouncer ]] || { echo "error: pid $PGB_PID is not pgbouncer" >&2; exit 1; }
[[ $(<"/proc/$DEMO_PID/comm") == switchyard ]] || { echo "error: pid $DEMO_PID is not switchyard" >&2; exit 1; }

# --- machine --------------------------------------------------------------

SERVER_VERSION=$(PGPASSWORD=app-secret PGSSLMODE=disable "$PSQL" -h 127.0.0.1 -p "$PRIMARY_PORT" -U app \
    -d appdb -Atc 'SELECT version()')
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
echo "## Machine"
echo
echo "- nproc: $(nproc)${CPU_MODEL:+ ($CPU_MODEL)}"
echo "- kernel: $(uname -sr)"
echo "- PostgreSQL: $SERVER_VERSION"
echo "- PgBouncer: $("$PGBOUNCER" --version | head -n1)"
echo "- switchyard: $("$BIN" --version 2>/dev/null || echo "$BIN")"
echo "- pool mode: $MODE$( [[ $MODE == transaction ]] && echo ", pool of $POOL server connections" )"
echo "- switchyard worker_threads: ${SWITCHYARD_SERVER_WORKER_THREADS:-0 (one per core)}"
echo "- pgbench: $("$PGBENCH" --version), -c $CLIENTS -j $THREADS -T $DURATION -n, scale $SCALE, warm-up ${WARMUP} s per target"
echo "- load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

# --- runs -----------------------------------------------------------------

# measure SCRIPT_LABEL TARGET PORT PID [pgbench args...]: prints one table row.
measure() {
    local label=$1 target=$2 port=$3 pid=$4
    shift 4
    local name="${label}-${target}"
    log "$label via $target: warm-up ${WARMUP} s, then ${DURATION} s"
    run_pgbench "$name-warmup" "$port" "$WARMUP" "$@"
    local before="0 0" after="0 0"
    if [[ -n $pid ]]; then before=$(cpu_ticks "$pid"); fi
    run_pgbench "$name" "$port" "$DURATION" "$@"
    if [[ -n $pid ]]; then after=$(cpu_ticks "$pid"); fi
    local user_ticks system_ticks
    user_ticks=$(( ${after% *} - ${before% *} ))
    system_ticks=$(( ${after#* } - ${before#* } ))
    local out=$TMP/pgbench-$name.out tps tx
    local row_label=$target
    if [[ -n ${ROUND:-} ]]; then row_label="$target (round $ROUND)"; fi
    tps=$(awk '/^tps = / { print $3; exit }' "$out")
    tx=$(awk -F': ' '/number of transactions actually processed/ { split($2, a, "/"); print a[1]; exit }' "$out")
    if [[ -z $tps || -z $tx ]]; then
        echo "error: cannot parse pgbench output:" >&2
        cat "$out" >&2
        return 1
    fi
    if [[ -z $pid ]]; then
        printf '| %s | %.0f | %s | – | – | – |\n' "$row_label" "$tps" "$tx"
    else
        awk -v t="$row_label" -v tps="$tps" -v tx="$tx" -v u="$user_ticks" -v s="$system_ticks" -v hz="$CLK_TCK" \
            'BEGIN { cpu = (u + s) / hz; printf "| %s | %.0f | %d | %.2f | %.0f %% | %.4f |\n", t, tps, tx, cpu, u * 100 / (u + s), cpu * 1000 / tx }'
    fi
}

table() {
    local label=$1 title=$2
    shift 2
    echo "## $title"
    echo
    echo "| target | TPS | transactions | proxy CPU-s | of which user | CPU-s per 1000 tx |"
    echo "|---|---:|---:|---:|---:|---:|"
    measure "$label" direct "$PRIMARY_PORT" "" "$@"
    measure "$label" switchyard "$SY_PORT" "$DEMO_PID" "$@"
    measure "$label" pgbouncer "$PGB_PORT" "$PGB_PID" "$@"
    echo
}

# rounds SCRIPT_LABEL TITLE [pgbench args...]: ROUNDS alternating runs of
# both proxies, then each one's mean TPS and CPU-s per 1000 tx.
rounds() {
    local label=$1 title=$2 rows
    shift 2
    echo "## $title, $ROUNDS alternating rounds"
    echo
    echo "| target | TPS | transactions | proxy CPU-s | of which user | CPU-s per 1000 tx |"
    echo "|---|---:|---:|---:|---:|---:|"
    rows=$TMP/rounds.md
    : >"$rows"
    for (( ROUND = 1; ROUND <= ROUNDS; ROUND++ )); do
        measure "$label" switchyard "$SY_PORT" "$DEMO_PID" "$@" | tee -a "$rows"
        measure "$label" pgbouncer "$PGB_PORT" "$PGB_PID" "$@" | tee -a "$rows"
    done
    unset ROUND
    echo
    awk -F'|' '{ split($2, name, " "); t = name[1]; n[t]++; tps[t] += $3; cpu[t] += $7 }
        END { for (t in n) printf "- %s: mean TPS %.0f, mean CPU-s per 1000 tx %.4f over %d rounds\n", t, tps[t] / n[t], cpu[t] / n[t], n[t] }' "$rows" | sort
    echo
}

if (( ROUNDS > 1 )); then
    rounds select-only "Select-only (pgbench -S -c $CLIENTS -j $THREADS -T $DURATION -n)" -S
fi
table select-only "Select-only (pgbench -S -c $CLIENTS -j $THREADS -T $DURATION -n)" -S
table tpcb "TPC-B-like (pgbench -c $CLIENTS -j $THREADS -T $DURATION -n)"

echo "CPU-s = utime+stime of the proxy process during the measured run (/proc/PID/stat, CLK_TCK=$CLK_TCK)."
