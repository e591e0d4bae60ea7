#!/usr/bin/env bash
# The benchmark of issue 5 (`make bench`): fanout against PostgreSQL's own limit (pgbench) and
# against the services a team would write instead (bench/peers/), side by side, in one run.
#
#   bench/run.sh            (make bench builds build/fanout first)
#
# It starts a throwaway PostgreSQL (scripts/localpg.sh start-temp, then TCP on 127.0.0.1 too),
# loads the pgbench schema at scale 10, checks that every service answers the same requests with
# the same results, and then, BENCH_REPEAT times:
#   - pgbench -S -M prepared, 16 clients, over TCP and over the unix socket, and pgbench with
#     bench/pgbench/pipeline10.sql (10 point selects in one pipeline) over the services' transport;
#   - for each service (fanout, node, asyncio, threads; the order rotates per repetition), started
#     with a pool of 16 and loaded with wrk (bench/wrk/): (a) single.lua, (b) batch10.lua,
#     (c) batch100.lua with SELECT abalance FROM pgbench_accounts WHERE aid = $1 and random aids,
#     (e) range.lua (10,000 rows a request); then restarted with a pool of 64 for
#     (d) slow.lua with 64 x pg_sleep(0.01) a batch and one client; and after fanout, (b) again on
#     fanout with --reset-sessions false, for the cost of the session reset (issue 6);
#   - after fanout's (d), (d)'s floor (bench/floor.c, no HTTP): the same sleeps from a plain libpq
#     program, a thread per connection or one thread for all, each with and without the statements
#     fanout's session reset adds to a lone read.
# Each run is a warm-up, then a measured run of BENCH_SECONDS. Every service gets the same clients,
# the same wrk threads and the same keys (the same seeds). It prints one table of medians and the
# issue's targets with PASS/FAIL, and writes bench/results/latest.json (medians, targets, every raw
# run, machine and settings) and bench/results/latest.svg. Raw logs go to build/bench/.
# Everything listens on and connects to 127.0.0.1 (or a unix socket) only. Every process it started
# and the cluster are stopped on exit, also on failure or Ctrl-C.
#
# Settings (environment):
#   BENCH_SECONDS (10)        measured seconds per run
#   BENCH_REPEAT (3)          repetitions; the table shows medians
#   BENCH_WARMUP (2)          warm-up seconds before the first run on a fresh service and before
#                             each pgbench run; later runs on the same service warm up for half
#   BENCH_CLIENTS (16)        wrk connections and pgbench clients ((d) always uses 1)
#   BENCH_WORKERS (16)        fanout workers = each peer's pool size
#   BENCH_FANOUT_WORKERS (64) the same for (d)
#   BENCH_SCALE (10)          pgbench scale (100,000 accounts per unit)
#   BENCH_SEED (1)            key seed; repetition r uses BENCH_SEED+r-1 for every system
#   BENCH_DB (unix)           how the services reach PostgreSQL: unix or tcp; the targets compare
#                             with pgbench over the same transport
#   BENCH_SYSTEMS ("fanout node asyncio threads"), BENCH_WORKLOADS ("single batch10 batch100
#                             fanout64 rows10k"), BENCH_PGBENCH (1; 0 skips pgbench): subsets,
#                             for development
#   BENCH_OUT (bench/results) where latest.json and latest.svg go
#   FANOUT_BIN (build/fanout) the fanout binary (a release build)
#   FLOOR_BIN (build/bench-floor) bench/floor.c's binary (make bench builds both)
#
# As root it installs the Debian packages it lacks (wrk postgresql-client python3-aiohttp
# python3-asyncpg python3-psycopg2 python3-uvloop, and postgresql nodejs npm curl when missing),
# and the Node peer's npm packages (npm ci in bench/peers/node).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

secs=${BENCH_SECONDS:-10}
repeat=${BENCH_REPEAT:-3}
warmup=${BENCH_WARMUP:-2}
clients=${BENCH_CLIENTS:-16}
workers=${BENCH_WORKERS:-16}
fan_workers=${BENCH_FANOUT_WORKERS:-64}
scale=${BENCH_SCALE:-10}
seed=${BENCH_SEED:-1}
db_transport=${BENCH_DB:-unix}
systems=${BENCH_SYSTEMS:-fanout node asyncio threads}
workloads=${BENCH_WORKLOADS:-single batch10 batch100 fanout64 rows10k}
do_pgbench=${BENCH_PGBENCH:-1}
outdir=${BENCH_OUT:-$here/results}
fanout_bin=${FANOUT_BIN:-$root/build/fanout}
floor_bin=${FLOOR_BIN:-$root/build/bench-floor}
wrk_threads=2
reply_timeout=30
sleep_n=64
sleep_s=0.01
range_rows=10000

die() { echo "bench: $*" >&2; exit 1; }
say() { echo "bench: $*" >&2; }
int_in() { # NAME VALUE MIN MAX
    case $2 in '' | *[!0-9]*) die "$1=$2: want an integer in $3..$4" ;; esac
    if [ "$2" -lt "$3" ] || [ "$2" -gt "$4" ]; then die "$1=$2: want an integer in $3..$4"; fi
}
int_in BENCH_SECONDS "$secs" 1 600
int_in BENCH_REPEAT "$repeat" 1 20
int_in BENCH_WARMUP "$warmup" 0 60
int_in BENCH_CLIENTS "$clients" 1 256
int_in BENCH_WORKERS "$workers" 1 128
int_in BENCH_FANOUT_WORKERS "$fan_workers" 1 128
int_in BENCH_SCALE "$scale" 1 100
int_in BENCH_SEED "$seed" 0 1000000
case $db_transport in unix | tcp) ;; *) die "BENCH_DB=$db_transport: want unix or tcp" ;; esac
for s in $systems; do case $s in fanout | node | asyncio | threads) ;; *) die "BENCH_SYSTEMS: unknown system $s" ;; esac; done
for w in $workloads; do case $w in single | batch10 | batch100 | fanout64 | rows10k) ;; *) die "BENCH_WORKLOADS: unknown workload $w" ;; esac; done
accounts=$((scale * 100000))
warmup2=$(((warmup + 1) / 2))

# --- packages ---------------------------------------------------------------------------------
PKGS="wrk postgresql-client python3-aiohttp python3-asyncpg python3-psycopg2 python3-uvloop"
ensure_packages() {
    missing=""
    for p in $PKGS; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
    command -v node >/dev/null 2>&1 || missing="$missing nodejs"
    command -v npm >/dev/null 2>&1 || missing="$missing npm"
    command -v curl >/dev/null 2>&1 || missing="$missing curl"
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" != 0 ]; then
        die "missing packages:$missing (run as root, or install them)"
    fi
    say "installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
}
ensure_packages
PY=/usr/bin/python3   # Debian's, which has the python3-* packages (not a pyenv or venv python)
[ -x "$PY" ] || die "no /usr/bin/python3"
PGBENCH=$(command -v pgbench || true)
if [ -z "$PGBENCH" ]; then
    for d in /usr/lib/postgresql/*/bin; do [ -x "$d/pgbench" ] && PGBENCH=$d/pgbench; done
fi
if [ -z "$PGBENCH" ] || [ ! -x "$PGBENCH" ]; then die "no pgbench"; fi
[ -x "$fanout_bin" ] || die "no $fanout_bin (run make first, or make bench)"
case " $systems " in *" fanout "*)
    case " $workloads " in *" fanout64 "*)
        [ -x "$floor_bin" ] || die "no $floor_bin (run make bench, or make build/bench-floor)" ;;
    esac ;;
esac

case " $systems " in *" node "*)
    if [ ! -f "$here/peers/node/node_modules/.package-lock.json" ] ||
        [ "$here/peers/node/package-lock.json" -nt "$here/peers/node/node_modules/.package-lock.json" ]; then
        say "npm ci in bench/peers/node"
        (cd "$here/peers/node" && npm ci --omit=dev --no-audit --no-fund --loglevel=error >&2)
    fi ;;
esac

# --- cleanup ----------------------------------------------------------------------------------
pgdir=""
pids=""
work=$(mktemp -d "${TMPDIR:-/tmp}/fanout-bench.XXXXXX")
logs=$root/build/bench
rm -rf "$logs"
mkdir -p "$logs" "$outdir"

child=""
# fg CMD...: run CMD and wait for it, interruptibly (a signal's trap runs at once, not after CMD).
fg() {
    "$@" &
    child=$!
    rc=0
    wait "$child" || rc=$?
    child=""
    return "$rc"
}

cleanup() {
    status=$?
    trap - EXIT INT TERM
    if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null || true; wait "$child" 2>/dev/null || true; fi
    for pid in $pids; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in $pids; do
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "$pgdir" ]; then "$root/scripts/localpg.sh" stop-temp "$pgdir" || true; fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# free_port: a TCP port on 127.0.0.1 that nothing listens on now.
free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- PostgreSQL -------------------------------------------------------------------------------
started=$(date +%s)
say "starting a throwaway PostgreSQL"
out=$("$root/scripts/localpg.sh" start-temp)
pgdir=$(printf '%s\n' "$out" | sed -n 1p)
[ -d "$pgdir" ] || die "localpg.sh start-temp printed no directory"
dbname=$(printf '%s\n' "$out" | sed -n 2p | sed -n 's/.*dbname=\([^ ]*\).*/\1/p')
dbuser=$(printf '%s\n' "$out" | sed -n 2p | sed -n 's/.*user=\([^ ]*\).*/\1/p')
if [ -z "$dbname" ] || [ -z "$dbuser" ]; then die "cannot read the conninfo: $out"; fi
# TCP on loopback as well (for pgbench over TCP, and BENCH_DB=tcp), on a free port; a buffer
# cache that holds the whole scale-10 data set.
pgport=$(free_port)
cat >>"$pgdir/data/postgresql.conf" <<CONF
# bench/run.sh
listen_addresses = '127.0.0.1'
port = $pgport
shared_buffers = 512MB
CONF
"$root/scripts/localpg.sh" server-stop "$pgdir"
"$root/scripts/localpg.sh" server-start "$pgdir"
sock=$pgdir/run
dsn_unix="postgresql://$dbuser@/$dbname?host=$sock&port=$pgport"
dsn_tcp="postgresql://$dbuser@127.0.0.1:$pgport/$dbname"
if [ "$db_transport" = unix ]; then dsn=$dsn_unix; else dsn=$dsn_tcp; fi

say "pgbench -i -s $scale"
fg "$PGBENCH" -i -s "$scale" -q -h "$sock" -p "$pgport" -U "$dbuser" "$dbname" >"$logs/pgbench-init.log" 2>&1 ||
    { cat "$logs/pgbench-init.log" >&2; die "pgbench -i failed"; }
# Load the table and its index into shared_buffers, so the first runs do not pay for it.
psql -X -q -h "$sock" -p "$pgport" -U postgres -d "$dbname" -v ON_ERROR_STOP=1 \
    -c "CREATE EXTENSION IF NOT EXISTS pg_prewarm" \
    -c "SELECT pg_prewarm('pgbench_accounts'), pg_prewarm('pgbench_accounts_pkey')" >/dev/null 2>&1 ||
    say "pg_prewarm is not there; the warm-ups load the cache instead"
pg_version=$(psql -X -At -h "$sock" -p "$pgport" -U "$dbuser" -d "$dbname" -c "SHOW server_version")

# --- services ---------------------------------------------------------------------------------
svc_pid=""
svc_port=""
# start_service NAME POOL: start it on a free port, wait until /readyz answers 200.
start_service() {
    name=$1 pool=$2
    svc_port=$(free_port)
    log=$logs/$name-pool$pool.log
    case $name in
    fanout)
        "$fanout_bin" --listen "127.0.0.1:$svc_port" --database "$dsn" --workers "$pool" \
            --queue-size 4096 >>"$log" 2>&1 &
        ;;
    fanout-noreset) # what the session reset costs (issue 6): the same, without it
        "$fanout_bin" --listen "127.0.0.1:$svc_port" --database "$dsn" --workers "$pool" \
            --queue-size 4096 --reset-sessions false >>"$log" 2>&1 &
        ;;
    node)
        NODE_ENV=production node "$here/peers/node/server.js" "$svc_port" "$dsn" "$pool" >>"$log" 2>&1 &
        ;;
    asyncio)
        "$PY" "$here/peers/asyncio/server.py" "$svc_port" "$dsn" "$pool" >>"$log" 2>&1 &
        ;;
    threads)
        "$PY" "$here/peers/threads/server.py" "$svc_port" "$dsn" "$pool" >>"$log" 2>&1 &
        ;;
    esac
    svc_pid=$!
    pids="$pids $svc_pid"
    for _ in $(seq 1 150); do
        kill -0 "$svc_pid" 2>/dev/null || { tail -n 20 "$log" >&2; die "$name exited at start-up"; }
        if curl -sf -m 2 -o /dev/null "http://127.0.0.1:$svc_port/readyz"; then
            sleep 0.2
            kill -0 "$svc_pid" 2>/dev/null || { tail -n 20 "$log" >&2; die "$name exited at start-up"; }
            return 0
        fi
        sleep 0.1
    done
    tail -n 20 "$log" >&2
    die "$name is not ready after 15 s"
}

stop_service() {
    [ -n "$svc_pid" ] || return 0
    kill -TERM "$svc_pid" 2>/dev/null || true
    for _ in $(seq 1 25); do kill -0 "$svc_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$svc_pid" 2>/dev/null || true
    wait "$svc_pid" 2>/dev/null || true
    pids=$(echo "$pids" | tr ' ' '\n' | grep -vx "$svc_pid" | tr '\n' ' ' || true)
    svc_pid=""
}

raw=$work/raw.jsonl
: >"$raw"
# shellcheck disable=SC2016 # $1 is the query's placeholder
point_sql='SELECT abalance FROM pgbench_accounts WHERE aid = $1'

# run_wrk SYSTEM WORKLOAD REP WARMUP_SECONDS: one warm-up and one measured wrk run.
run_wrk() {
    system=$1 workload=$2 rep=$3 warm=$4
    threads=$wrk_threads conns=$clients rows=1
    env_vars=(BENCH_SQL="$point_sql" BENCH_KEYS="$accounts")
    case $workload in
    single) script=single.lua ;;
    batch10) script=batch10.lua; rows=10 ;;
    batch100) script=batch100.lua; rows=100 ;;
    fanout64) script=slow.lua; threads=1; conns=1; rows=$sleep_n
        env_vars=(BENCH_SLOW_N="$sleep_n" BENCH_SLOW_SECONDS="$sleep_s") ;;
    rows10k) script=range.lua; rows=$range_rows
        env_vars=(BENCH_RANGE_ROWS="$range_rows" BENCH_RANGE_KEYS="$accounts") ;;
    esac
    url=http://127.0.0.1:$svc_port
    run_seed=$((seed + rep - 1))
    cmd="wrk -t$threads -c$conns -d${secs}s --timeout ${reply_timeout}s -s bench/wrk/$script"
    if [ "$warm" -gt 0 ]; then
        fg env "${env_vars[@]}" BENCH_SEED=$((run_seed + 1000)) timeout $((warm + reply_timeout + 30)) \
            wrk -t"$threads" -c"$conns" -d"${warm}s" --timeout "${reply_timeout}s" -s "$here/wrk/$script" "$url" \
            >"$logs/$system-$workload-$rep.warmup.log" 2>&1 || true
    fi
    log=$logs/$system-$workload-$rep.log
    fg env "${env_vars[@]}" BENCH_SEED=$run_seed timeout $((secs + reply_timeout + 30)) \
        wrk -t"$threads" -c"$conns" -d"${secs}s" --timeout "${reply_timeout}s" -s "$here/wrk/$script" "$url" \
        >"$log" 2>&1 || { tail -n 20 "$log" >&2; die "wrk failed: $system $workload"; }
    kill -0 "$svc_pid" 2>/dev/null || die "$system exited during $workload (log: ${logs#"$root"/}/$system-pool*.log)"
    full_cmd=""
    for v in "${env_vars[@]}"; do full_cmd="$full_cmd${v%%=*}='${v#*=}' "; done
    full_cmd="${full_cmd}BENCH_SEED=$run_seed $cmd URL"
    "$PY" "$here/report.py" wrk --system "$system" --workload "$workload" --rep "$rep" \
        --rows-per-request "$rows" --log "$log" --cmd "$full_cmd" >>"$raw"
    summary=$(grep -E "^[a-z0-9]+: [0-9.]+ requests/s" "$log" | head -n 1 || true)
    printf 'bench: rep %s %-8s %-9s %s\n' "$rep" "$system" "$workload" "${summary#*: }" >&2
}

# run_pgbench NAME WORKLOAD REP HOST QUERIES_PER_TX ARGS...: warm-up, then a measured run with a
# sampled per-transaction log for the latency percentiles.
run_pgbench() {
    name=$1 workload=$2 rep=$3 host=$4 qpt=$5
    shift 5
    run_seed=$((seed + rep - 1))
    base=("$PGBENCH" -n -c "$clients" -j "$wrk_threads" -h "$host" -p "$pgport" -U "$dbuser" "$@")
    if [ "$warmup" -gt 0 ]; then
        fg "${base[@]}" -T "$warmup" --random-seed=$((run_seed + 1000)) "$dbname" \
            >"$logs/$name-$workload-$rep.warmup.log" 2>&1 || true
    fi
    log=$logs/$name-$workload-$rep.log
    prefix=$work/pgblog-$name-$workload-$rep
    fg "${base[@]}" -T "$secs" --random-seed="$run_seed" -l --sampling-rate=0.05 --log-prefix="$prefix" \
        "$dbname" >"$log" 2>&1 || { tail -n 20 "$log" >&2; die "pgbench failed: $name $workload"; }
    hostname_shown=$host
    [ "$host" = "$sock" ] && hostname_shown=SOCKETDIR
    cmd="pgbench -n -c $clients -j $wrk_threads -h $hostname_shown -p PORT -U $dbuser $* -T $secs --random-seed=$run_seed $dbname"
    "$PY" "$here/report.py" pgbench --system "$name" --workload "$workload" --rep "$rep" \
        --queries-per-tx "$qpt" --log "$log" --samples "$prefix.*" --cmd "$cmd" >>"$raw"
    rm -f "$prefix".*
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without.*/\1/p' "$log")
    printf 'bench: rep %s %-12s %-10s %s tps (x%s queries)\n' "$rep" "$name" "$workload" "$tps" "$qpt" >&2
}

# run_floor SYSTEM REP ARGS...: (d)'s floor, bench/floor.c with ARGS; its own warm-up first.
run_floor() {
    system=$1 rep=$2
    shift 2
    log=$logs/$system-fanout64-$rep.log
    args=(--connections "$fan_workers" --sleep "$sleep_s" --seconds "$secs" --warmup "$warmup" "$@")
    fg timeout $((warmup + secs + 60)) "$floor_bin" --database "$dsn" "${args[@]}" >"$log" 2>&1 ||
        { tail -n 20 "$log" >&2; die "bench-floor failed: $system"; }
    "$PY" "$here/report.py" wrk --system "$system" --workload fanout64 --rep "$rep" \
        --rows-per-request "$sleep_n" --log "$log" --cmd "build/bench-floor --database DSN ${args[*]}" >>"$raw"
    printf 'bench: rep %s %-8s %-9s %s\n' "$rep" "$system" fanout64 "$(grep '^floor:' "$log" | head -n 1)" >&2
}

wants() { case " $workloads " in *" $1 "*) return 0 ;; esac; return 1; }

# --- the replies check ------------------------------------------------------------------------
check_urls=()
ref_url=""
for s in $systems; do
    start_service "$s" "$workers"
    eval "port_$s=$svc_port pid_$s=$svc_pid"
    svc_pid=""
done
for s in $systems; do
    p=port_$s
    if [ -z "$ref_url" ] && [ "$s" = fanout ]; then ref_url=http://127.0.0.1:${!p}; else check_urls+=("http://127.0.0.1:${!p}"); fi
done
if [ -n "$ref_url" ] && [ ${#check_urls[@]} -gt 0 ]; then
    "$PY" "$here/report.py" check --reference "$ref_url" "${check_urls[@]}" >&2
fi
for s in $systems; do
    p=pid_$s
    svc_pid=${!p}
    stop_service
done

# --- the runs ---------------------------------------------------------------------------------
loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)
# shellcheck disable=SC2086 # a list of words
set -- $systems
nsys=$#
for rep in $(seq 1 "$repeat"); do
    if [ "$do_pgbench" = 1 ]; then
        if wants single || wants batch10; then
            run_pgbench pgbench-tcp select "$rep" 127.0.0.1 1 -S -M prepared
            run_pgbench pgbench-unix select "$rep" "$sock" 1 -S -M prepared
        fi
        if wants batch10; then
            pipe_host=$sock
            [ "$db_transport" = tcp ] && pipe_host=127.0.0.1
            run_pgbench "pgbench-$db_transport" pipeline10 "$rep" "$pipe_host" 10 -M prepared \
                -D naccounts="$accounts" -f "$here/pgbench/pipeline10.sql"
        fi
    fi
    # Rotate the order of the services from one repetition to the next.
    order=()
    for i in $(seq 0 $((nsys - 1))); do
        j=$(((i + rep - 1) % nsys + 1))
        order+=("${!j}")
    done
    for s in "${order[@]}"; do
        first=1
        pool_workloads=""
        for w in $workloads; do [ "$w" = fanout64 ] || pool_workloads="$pool_workloads $w"; done
        if [ -n "$pool_workloads" ]; then
            start_service "$s" "$workers"
            for w in $pool_workloads; do
                if [ $first = 1 ]; then warm=$warmup; first=0; else warm=$warmup2; fi
                run_wrk "$s" "$w" "$rep" "$warm"
            done
            stop_service
        fi
        if wants fanout64; then
            start_service "$s" "$fan_workers"
            run_wrk "$s" fanout64 "$rep" "$warmup"
            stop_service
            if [ "$s" = fanout ]; then
                run_floor floor-threads-reset "$rep" --threads "$fan_workers" --reset
                run_floor floor-threads "$rep" --threads "$fan_workers"
                run_floor floor-async-reset "$rep" --threads 1 --reset
                run_floor floor-async "$rep" --threads 1
            fi
        fi
        # Right after fanout's own batch10, the same without the session reset.
        if [ "$s" = fanout ] && wants batch10; then
            start_service fanout-noreset "$workers"
            run_wrk fanout-noreset batch10 "$rep" "$warmup"
            stop_service
        fi
    done
done
loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)
finished=$(date +%s)

# --- the report -------------------------------------------------------------------------------
commit=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)
dirty=false
[ -n "$(git -C "$root" status --porcelain 2>/dev/null | head -n 1)" ] && dirty=true
pyver() { "$PY" -c "import $1; print($1.__version__)" 2>/dev/null || echo none; }
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
mem_kb=$(sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo)
node_pg=$(sed -n 's/^ *"version": "\(.*\)",/\1/p' "$here/peers/node/node_modules/pg/package.json" 2>/dev/null | head -n 1)
MACHINE_JSON=$work/machine.json SETTINGS_JSON=$work/settings.json \
    M_NPROC=$(nproc) M_CPU="$cpu" M_MEM_KB="$mem_kb" M_KERNEL="$(uname -r)" M_COMMIT="$commit" \
    M_DIRTY=$dirty M_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)" M_LOAD0="$loadavg_start" M_LOAD1="$loadavg_end" \
    M_PG="$pg_version" M_NODE="$(node --version 2>/dev/null || echo none)" M_NODE_PG="${node_pg:-none}" \
    M_PYTHON="$("$PY" -c 'import platform; print(platform.python_version())')" \
    M_AIOHTTP="$(pyver aiohttp)" M_ASYNCPG="$(pyver asyncpg)" M_PSYCOPG2="$(pyver psycopg2)" \
    M_UVLOOP="$(pyver uvloop)" M_WRK="$(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2)" \
    M_FANOUT="$("$fanout_bin" --version 2>/dev/null | head -n 1)" M_ELAPSED=$((finished - started)) \
    S_SECONDS=$secs S_REPEAT=$repeat S_WARMUP=$warmup S_CLIENTS=$clients S_WORKERS=$workers \
    S_FAN_WORKERS=$fan_workers S_SCALE=$scale S_SEED=$seed S_DB=$db_transport S_SYSTEMS="$systems" \
    S_WORKLOADS="$workloads" S_SLEEP_N=$sleep_n S_SLEEP_S=$sleep_s S_RANGE=$range_rows S_THREADS=$wrk_threads \
    "$PY" - <<'EOF'
import json, os
e = os.environ
machine = {
    "nproc": int(e["M_NPROC"]), "cpu": e["M_CPU"], "memory_kb": int(e["M_MEM_KB"] or 0),
    "kernel": e["M_KERNEL"], "git_commit": e["M_COMMIT"], "git_dirty": e["M_DIRTY"] == "true",
    "date": e["M_DATE"], "loadavg_start": e["M_LOAD0"], "loadavg_end": e["M_LOAD1"],
    "elapsed_s": int(e["M_ELAPSED"]),
    "note": "2 cores shared by the load generator (wrk, pgbench), PostgreSQL and the service under "
            "test, on a machine other sessions may also be using",
    "versions": {"postgresql": e["M_PG"], "fanout": e["M_FANOUT"], "node": e["M_NODE"],
                 "npm pg": e["M_NODE_PG"], "python": e["M_PYTHON"], "aiohttp": e["M_AIOHTTP"],
                 "asyncpg": e["M_ASYNCPG"], "psycopg2": e["M_PSYCOPG2"], "uvloop": e["M_UVLOOP"],
                 "wrk": e["M_WRK"]},
}
settings = {
    "seconds": int(e["S_SECONDS"]), "repeat": int(e["S_REPEAT"]), "warmup_s": int(e["S_WARMUP"]),
    "clients": int(e["S_CLIENTS"]), "wrk_threads": int(e["S_THREADS"]), "workers": int(e["S_WORKERS"]),
    "fanout_workers": int(e["S_FAN_WORKERS"]), "scale": int(e["S_SCALE"]), "seed": int(e["S_SEED"]),
    "db_transport": e["S_DB"], "systems": e["S_SYSTEMS"].split(), "workloads": e["S_WORKLOADS"].split(),
    "sleep_n": int(e["S_SLEEP_N"]), "sleep_ms": float(e["S_SLEEP_S"]) * 1000,
    "range_rows": int(e["S_RANGE"]), "fanout_queue_size": 4096,
}
json.dump(machine, open(e["MACHINE_JSON"], "w"), indent=1)
json.dump(settings, open(e["SETTINGS_JSON"], "w"), indent=1)
EOF
cp "$raw" "$logs/raw.jsonl"
echo
"$PY" "$here/report.py" report --raw "$raw" --machine "$work/machine.json" --settings "$work/settings.json" \
    --json "$outdir/latest.json" --svg "$outdir/latest.svg" | tee "$logs/table.txt"
echo
echo "bench: wrote ${outdir#"$root"/}/latest.json and ${outdir#"$root"/}/latest.svg; logs in ${logs#"$root"/}/ ($((finished - started)) s)"
