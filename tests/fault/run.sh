#!/bin/bash
# The scripted fault run (`make fault`): fanout under wrk load while its PostgreSQL goes away and
# comes back. Usage: tests/fault/run.sh [FANOUT_BINARY]   (default build/fanout)
#
#  1. a throwaway PostgreSQL (scripts/localpg.sh start-temp) with the demo schema; fanout on a free
#     127.0.0.1 port, 8 workers, JSON log on stderr
#  2. warm-up: 10 s of wrk -t2 -c64 with mixed.lua's batch; then fanout's RSS and open fds
#  3. the fault run, 60 s: wrk -t2 -c64 with tests/fault/fault.lua (mixed.lua's batch, every reply
#     checked); beside it the probe, a second wrk (-t1 -c10, FAULT_PROBE=1) sending on each
#     connection a one-query batch a second, with the same checks (each of wrk's 64 connections
#     waits for its reply, so while batches sit in fanout's queue wrk may send nothing new: the
#     probe's pauses make batches arrive while the database is down); GET /readyz sampled every
#     100 ms; at +20 s
#     PostgreSQL is stopped (fast shutdown), at +30 s started again
#  4. 2 s later: RSS and fds again; fanout still alive and a batch still succeeds
# Pass: fanout never exited; every reply (wrk's and the probe's) is a 200 with a JSON body or a 503
# with a JSON {"error":{"code":"db_unavailable"|"overloaded",...}} body; no request left without a
# reply; /readyz 200 within 2 s of PostgreSQL being back (server-start returned), and 200 from then
# on; fds after = fds before +-2; RSS after the fault run <= 110% of RSS after the warm-up.
# Prints each criterion with its figure and exits non-zero when any fails. The files of the run
# (fanout's log, the wrk outputs, the /readyz samples, a per-second timeline of wrk's replies) stay
# in build/fault/.
#
# Environment (for trying things out; the defaults are the test):
#   FAULT_DURATION (60) FAULT_STOP_AT (20) FAULT_START_AT (30) FAULT_WARMUP (10) seconds,
#   FAULT_CONNECTIONS (64), FAULT_WORKERS (8).
set -u
export LC_ALL=C
here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here" || exit 1
bin=${1:-build/fanout}
duration=${FAULT_DURATION:-60}
stop_at=${FAULT_STOP_AT:-20}
start_at=${FAULT_START_AT:-30}
warmup=${FAULT_WARMUP:-10}
conns=${FAULT_CONNECTIONS:-64}
workers=${FAULT_WORKERS:-8}
out=build/fault
localpg=scripts/localpg.sh

say() { printf 'fault: %s\n' "$*"; }
die() { printf 'fault: %s\n' "$*" >&2; exit 1; }

[ -x "$bin" ] || die "no $bin (run make first)"
for tool in wrk curl psql timeout; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed"
done
if [ "$stop_at" -ge "$start_at" ] || [ "$start_at" -ge "$duration" ]; then
    die "want FAULT_STOP_AT < FAULT_START_AT < FAULT_DURATION"
fi

rm -rf "$out"
mkdir -p "$out"
log=$out/fanout.log
samples=$out/readyz.txt

# now_us: wall-clock microseconds since the epoch (bash 5, no fork).
now_us() { echo "${EPOCHREALTIME/./}"; }
# secs US: microseconds as seconds with 3 decimals (US >= 0).
secs() { printf '%d.%03d' $(($1 / 1000000)) $(($1 % 1000000 / 1000)); }

# alive: fanout has not exited (a child that exited stays a zombie until reaped: kill -0 succeeds).
alive() {
    local state
    state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$fanout_pid/status" 2>/dev/null)
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

pgdir="" fanout_pid="" wrk_pid="" probe_pid="" poller_pid=""
cleanup() {
    local p
    for p in $poller_pid $probe_pid $wrk_pid; do kill "$p" 2>/dev/null; done
    if [ -n "$fanout_pid" ] && alive; then
        kill -TERM "$fanout_pid" 2>/dev/null
        for _ in $(seq 1 150); do
            alive || break
            sleep 0.1
        done
        alive && kill -KILL "$fanout_pid" 2>/dev/null
    fi
    wait 2>/dev/null
    [ -n "$pgdir" ] && timeout 60 "$localpg" stop-temp "$pgdir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 1. PostgreSQL, demo data, fanout -----------------------------------------------------------------
pg=$(timeout 120 "$localpg" start-temp) || die "could not start PostgreSQL"
pgdir=$(echo "$pg" | head -n 1)
conninfo=$(echo "$pg" | tail -n 1)
timeout 60 psql -X -q -v ON_ERROR_STOP=1 -h "$pgdir/run" -U fanout -d fanout_test \
    -f scripts/demo.sql >"$out/demo.log" 2>&1 || { cat "$out/demo.log" >&2; die "could not load scripts/demo.sql"; }
say "PostgreSQL in $pgdir"

: >"$log"
"$bin" --listen 127.0.0.1:0 --database "$conninfo" --workers "$workers" --log-format json 2>"$log" &
fanout_pid=$!
# The port: from the start-up line "fanout VERSION listening on 127.0.0.1:PORT with N workers".
addr=""
for _ in $(seq 1 100); do
    addr=$(sed -n 's/.*"msg":"fanout [^ ]* listening on \(127\.0\.0\.1:[0-9]*\) .*/\1/p' "$log" | head -n 1)
    [ -n "$addr" ] && break
    alive || { cat "$log" >&2; die "fanout exited at start-up"; }
    sleep 0.1
done
[ -n "$addr" ] || { cat "$log" >&2; die "fanout did not say where it listens"; }
url=http://$addr
readyz() { curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url/readyz"; }
ready=""
for _ in $(seq 1 300); do
    [ "$(readyz)" = 200 ] && { ready=1; break; }
    sleep 0.1
done
[ -n "$ready" ] || { cat "$log" >&2; die "fanout not ready after 30 s"; }
say "fanout (pid $fanout_pid) ready on $url, $workers workers"

rss_kb() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$fanout_pid/status"; }
fd_count() { find "/proc/$fanout_pid/fd" -mindepth 1 -maxdepth 1 | wc -l; }

# 2. Warm-up -------------------------------------------------------------------------------------
# (fault.lua: mixed.lua's batch; mixed.lua's own done() reads tables back with thread:get, which
# corrupts wrk's memory now and then, see fault.lua)
say "warm-up: ${warmup} s of wrk -t2 -c$conns with tests/fault/fault.lua (mixed.lua's batch)"
timeout $((warmup + 30)) wrk -t2 -c"$conns" -d"${warmup}s" --timeout 60s -s tests/fault/fault.lua "$url" \
    >"$out/wrk-warmup.txt" 2>&1 || { cat "$out/wrk-warmup.txt"; die "wrk failed in the warm-up"; }
sed -n 's/^FAULT \(replies=[0-9]* status_200=[0-9]*\).* violations=\([0-9]*\).* p50_ms=\([^ ]*\) p99_ms=\([^ ]*\).*/fault:   \1, violations \2, latency p50 \3 ms, p99 \4 ms/p' "$out/wrk-warmup.txt"
sleep 2
alive || { tail -n 20 "$log"; die "fanout exited during the warm-up"; }
rss_before=$(rss_kb)
fds_before=$(fd_count)
say "after the warm-up: RSS $rss_before kB, $fds_before open fds"

# 3. The fault run -------------------------------------------------------------------------------
# The poller: one line per /readyz sample, "START_US STATUS END_US" (000: no answer within 1 s).
poll() {
    local next t code t1 wait_us pause
    next=$(now_us)
    while :; do
        t=$(now_us)
        code=$(readyz)
        t1=$(now_us)
        echo "$t $code $t1"
        next=$((next + 100000))
        wait_us=$((next - $(now_us)))
        if [ "$wait_us" -gt 0 ]; then
            printf -v pause '0.%06d' "$wait_us"
            sleep "$pause"
        else
            next=$(now_us)
        fi
    done
}
poll >"$samples" &
poller_pid=$!

say "fault run: ${duration} s of wrk -t2 -c$conns with tests/fault/fault.lua and the probe;" \
    "PostgreSQL stopped at +${stop_at} s, started at +${start_at} s"
t0=$(now_us)
timeout $((duration + 60)) wrk -t2 -c"$conns" -d"${duration}s" --timeout 60s -s tests/fault/fault.lua "$url" \
    >"$out/wrk-fault.txt" 2>&1 &
wrk_pid=$!
FAULT_PROBE=1 timeout $((duration + 60)) wrk -t1 -c10 -d"${duration}s" --timeout 60s -s tests/fault/fault.lua "$url" \
    >"$out/wrk-probe.txt" 2>&1 &
probe_pid=$!

# sleep_until US: sleep until t0 + US microseconds.
sleep_until() {
    local left=$(($1 - ($(now_us) - t0)))
    [ "$left" -gt 0 ] && sleep "$(secs "$left")"
}
sleep_until $((stop_at * 1000000))
t_stop=$(now_us)
timeout 90 "$localpg" server-stop "$pgdir" || say "server-stop failed"
t_stopped=$(now_us)
say "  +$(secs $((t_stop - t0))) s PostgreSQL stopping (fast); down at +$(secs $((t_stopped - t0))) s"
sleep_until $((start_at * 1000000))
t_start=$(now_us)
timeout 90 "$localpg" server-start "$pgdir" || say "server-start failed"
t_back=$(now_us)
say "  +$(secs $((t_start - t0))) s PostgreSQL starting; back (server-start returned) at +$(secs $((t_back - t0))) s"

wait "$wrk_pid"
wrk_rc=$?
wait "$probe_pid"
probe_rc=$?
wrk_pid="" probe_pid=""
t_end=$(now_us)
kill "$poller_pid" 2>/dev/null
wait "$poller_pid" 2>/dev/null
poller_pid=""
say "  +$(secs $((t_end - t0))) s wrk finished (exit $wrk_rc, probe $probe_rc)"

# 4. After ---------------------------------------------------------------------------------------
sleep 2
failed=0
check() { # check OK|FAIL TEXT
    if [ "$1" = OK ]; then say "PASS  $2"; else say "FAIL  $2"; failed=1; fi
}
verdict() { if "$@"; then echo OK; else echo FAIL; fi; }
zeros() { for v in "$@"; do [ "$v" = 0 ] || return 1; done; }

if alive; then
    rss_after=$(rss_kb)
    fds_after=$(fd_count)
else
    rss_after="" fds_after=""
fi
batch=$(curl -s --max-time 10 -w '\n%{http_code}' "$url/v1/batch" -H 'Content-Type: application/json' \
    -d '{"queries":[{"sql":"SELECT count(*) AS n FROM users"},{"sql":"SELECT k FROM fanout_bench_kv LIMIT 1"}]}')
batch_status=$(echo "$batch" | tail -n 1)
batch_body=$(echo "$batch" | sed '$d')

echo
sed -n '/^Running/,$p' "$out/wrk-fault.txt" | grep -v '^FAULT_SECOND\|^FAULT_SAMPLE\|^FAULT_[A-Z]* *$'
echo

# fanout never exited.
check "$(verdict alive)" "fanout never exited: pid $fanout_pid $(alive && echo alive || echo GONE) after the run"
if grep -q '"msg":"stopped"' "$log"; then check FAIL "fanout logged that it stopped"; fi
ok=FAIL
[ "$batch_status" = 200 ] && ! echo "$batch_body" | grep -q '"error"' && ok=OK
check "$ok" "a batch after the run: status $batch_status$([ "$ok" = OK ] || echo ", body: $(echo "$batch_body" | head -c 300)")"

# Replies: wrk's and the probe's, as fault.lua counted them. report NAME FILE RC sets, for that
# run, r_all r200 r_qerr r503 r_dbu r_ovl r_other r_viol r_sock r_max (empty r_all: no report).
report() {
    local name=$1 file=$2 rc=$3 line codes
    line=$(grep '^FAULT ' "$file")
    f() { echo "$line" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
    r_all="" r200="" r_qerr="" r503="" r_dbu="" r_ovl="" r_other="" r_viol="" r_sock="" r_max=""
    if [ -z "$line" ] || [ "$rc" != 0 ]; then
        check FAIL "$name produced no report (exit $rc); see $file"
        tail -n 20 "$file"
        return
    fi
    r_all=$(f replies) r200=$(f status_200) r503=$(f status_503) r_other=$(f status_other)
    r_dbu=$(f 503_db_unavailable) r_ovl=$(f 503_overloaded) r_viol=$(f violations)
    r_sock="$(f socket_errors) ($(f connect) connect, $(f read) read, $(f write) write, $(f timeout) timeout)"
    r_max=$(f max_ms)
    r_qerr=$(f replies_with_failed_queries)
    codes=$(sed -n 's/^FAULT_CODES //p' "$file")
    say "$name replies: $r_all: 200 x$r200 ($r_qerr of them with failed queries${codes:+: $codes})," \
        "503 x$r503 (db_unavailable x$r_dbu, overloaded x$r_ovl), other x$r_other"
}
report wrk "$out/wrk-fault.txt" "$wrk_rc"
w_all=$r_all w_other=${r_other:-?} w_viol=${r_viol:-?} w_sock=${r_sock:-?} w_max=${r_max:-?}
report probe "$out/wrk-probe.txt" "$probe_rc"
p_all=$r_all p_other=${r_other:-?} p_viol=${r_viol:-?} p_sock=${r_sock:-?} p_max=${r_max:-?}
if [ -n "$w_all" ] && [ -n "$p_all" ]; then
    check "$(verdict zeros "$w_other" "$p_other")" "no status other than 200 and 503: wrk $w_other, probe $p_other"
    check "$(verdict zeros "$w_viol" "$p_viol")" \
        "every 200 a JSON result, every 503 a JSON db_unavailable/overloaded error: violations wrk $w_viol, probe $p_viol"
    grep -h '^FAULT_VIOLATIONS .\|^FAULT_SAMPLE' "$out/wrk-fault.txt" "$out/wrk-probe.txt" | sed 's/^/fault:         /'
    check "$(verdict zeros "${w_sock%% *}" "${p_sock%% *}")" \
        "no request left without a reply (wrk socket errors): wrk $w_sock, probe $p_sock"
    say "info  longest reply time (wrk max latency): wrk $w_max ms, probe $p_max ms;" \
        "wrk p50 $(sed -n 's/^FAULT .* p50_ms=\([^ ]*\).*/\1/p' "$out/wrk-fault.txt") ms," \
        "p99 $(sed -n 's/^FAULT .* p99_ms=\([^ ]*\).*/\1/p' "$out/wrk-fault.txt") ms"
fi

# The timelines: per second of the run, the replies by kind; which seconds were not clean.
t0s=$((t0 / 1000000))
for name in fault probe; do
    awk -v t0="$t0s" '$1 == "FAULT_SECOND" { printf "%+4d  ok %5d  failed-queries %5d  503-db_unavailable %5d  503-overloaded %5d  violations %d\n",
        $2 - t0, $3, $4, $5, $6, $7 }' "$out/wrk-$name.txt" >"$out/timeline-$name.txt"
done
awk -v t0="$t0s" -v n="$duration" '
    FNR == 1 { name = (FILENAME ~ /probe/) ? "probe" : "wrk" }
    $1 == "FAULT_SECOND" { s = $2 - t0; seen[name, s] = 1
        if ($4 + $5 + $6 + $7 > 0) { if (first[name] == "") first[name] = s; last[name] = s } }
    END { for (k = 0; k < 2; k++) {
            name = k ? "probe" : "wrk"
            if (first[name] != "") printf "fault: info  %s: replies other than a clean 200 from second +%d to +%d of the run\n", name, first[name], last[name]
            else printf "fault: info  %s: every reply was a clean 200\n", name
            quiet = 0; list = ""
            # from +2 on: the probe waits 0.5 to 1.5 s before its first batches
            for (i = 2; i < n; i++) if (!((name, i) in seen)) { quiet++; list = list " +" i }
            if (quiet) printf "fault: info  %s: no reply at all in %d seconds of the run:%s\n", name, quiet, list } }' \
    "$out/wrk-fault.txt" "$out/wrk-probe.txt"

# Readiness: the first /readyz 200 sampled after PostgreSQL was started again, from server-start's return.
read -r first_down first_up flaps lost <<<"$(awk -v stop="$t_stop" -v start="$t_start" '
    $1 >= stop && $1 < start && $2 == 503 && down == "" { down = $1 }
    $1 >= start && $2 == 200 && up == "" { up = $1 }
    up != "" && $1 > up && $2 != 200 { flaps++ }
    $2 == "000" { lost++ }
    END { print (down == "" ? "-" : down), (up == "" ? "-" : up), flaps + 0, lost + 0 }' "$samples")"
nsamples=$(wc -l <"$samples")
if [ "$first_down" != - ]; then
    d=$((first_down - t_stopped)) sign=""
    [ "$d" -lt 0 ] && { d=$((-d)); sign="-"; }
    say "info  /readyz 503 from ${sign}$(secs "$d") s after PostgreSQL was down (server-stop returned)"
else
    say "info  /readyz never answered 503 while PostgreSQL was down"
fi
if [ "$first_up" = - ]; then
    check FAIL "ready again within 2 s of PostgreSQL being back: never ($nsamples samples in $samples)"
else
    d=$((first_up - t_back)); [ "$d" -lt 0 ] && d=0
    check "$(verdict [ "$d" -le 2000000 ])" "ready again within 2 s of PostgreSQL being back: $(secs "$d") s"
    check "$(verdict [ "$flaps" = 0 ])" "ready from then on: $flaps /readyz samples not 200 after that"
fi
say "info  /readyz samples: $nsamples in $(secs $((t_end - t0))) s, $lost of them unanswered within 1 s"

# fds and RSS. pct A B: 100 * A / B with one decimal, rounded down.
pct() { local t=$(($1 * 1000 / $2)); echo "$((t / 10)).$((t % 10))"; }
if [ -n "$fds_after" ]; then
    d=$((fds_after - fds_before)); [ "$d" -lt 0 ] && d=$((-d))
    check "$(verdict [ "$d" -le 2 ])" "open fds: $fds_before after the warm-up, $fds_after after the fault run (allowed +-2)"
    check "$(verdict [ $((rss_after * 100)) -le $((rss_before * 110)) ])" \
        "RSS: $rss_before kB after the warm-up, $rss_after kB after the fault run ($(pct "$rss_after" "$rss_before")%, allowed 110%)"
else
    check FAIL "open fds and RSS after the run: fanout is gone"
fi

# What fanout logged besides replies.
echo
say "fanout log ($log): warn/error lines by message (worker numbers folded):"
grep -v '"msg":"request"' "$log" | grep '"level":"\(warn\|error\)"' |
    sed -n 's/.*"level":"\([a-z]*\)","msg":"\(.\{0,110\}\).*/\1 \2/p' | sed 's/worker [0-9]*/worker N/' |
    sort | uniq -c | sort -rn | head -n 12 | sed 's/^/fault:   /'

echo
if [ "$failed" != 0 ]; then
    say "FAILED (files in $out)"
    exit 1
fi
say "passed"
