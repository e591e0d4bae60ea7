#!/bin/sh
# Run the wrk load scripts of bench/wrk/ against a fanout, one after the other, and print each
# script's output, then a summary table of their RESULT lines.
#
#   bench/run-wrk.sh [-u URL] [-d DURATION] [-c CONNECTIONS] [-t THREADS] [-T TIMEOUT] [-o FILE] [SCRIPT...]
#
#   -u URL          the fanout to load (default http://127.0.0.1:8080). Only loopback (127.x.y.z,
#                   localhost, [::1]) or the compose service `fanout` is accepted.
#   -d DURATION     per script, e.g. 10, 10s or 1m (default 10s, at most 10m)
#   -c CONNECTIONS  wrk connections (default 16, at most 1024)
#   -t THREADS      wrk threads (default 2; lowered to CONNECTIONS when above it)
#   -T TIMEOUT      wrk's per-reply timeout (default 5s, at most 60s)
#   -o FILE         also append each script's RESULT object to FILE, one JSON object a line
#   SCRIPT...       names in bench/wrk/ (single batch10 batch100 mixed slow; ".lua" optional);
#                   default: all five
#
# The same settings can come from WRK_URL, WRK_DURATION, WRK_CONNECTIONS, WRK_THREADS,
# WRK_TIMEOUT; WRK_SCRIPTS names the scripts' directory (default: wrk/ beside this file). The
# scripts' own settings (BENCH_SEED, BENCH_KEYS, BENCH_SQL, BENCH_SLOW_N, ...) pass through the
# environment; see bench/README.md.
#
# Exit status: 0 when every script ran and printed its RESULT line, 1 when one did not, 2 on bad
# usage. Non-200 replies and failed queries are reported, not fatal.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
scripts_dir=${WRK_SCRIPTS:-$here/wrk}
url=${WRK_URL:-http://127.0.0.1:8080}
duration=${WRK_DURATION:-10s}
connections=${WRK_CONNECTIONS:-16}
threads=${WRK_THREADS:-2}
reply_timeout=${WRK_TIMEOUT:-5s}
out=""
all="single batch10 batch100 mixed slow"

usage() {
    sed -n '2,/^set -eu/p' "$0" | sed -e '/^set -eu/d' -e 's/^# \{0,1\}//' >&2
    exit 2
}
die() { echo "run-wrk: $*" >&2; exit 2; }

while getopts u:d:c:t:T:o:h opt; do
    case $opt in
    u) url=$OPTARG ;;
    d) duration=$OPTARG ;;
    c) connections=$OPTARG ;;
    t) threads=$OPTARG ;;
    T) reply_timeout=$OPTARG ;;
    o) out=$OPTARG ;;
    *) usage ;;
    esac
done
shift $((OPTIND - 1))

# seconds NAME VALUE MAX: VALUE (N, Ns or Nm) in seconds, 1..MAX.
seconds() {
    case $2 in
    *[!0-9sm]* | '' | [sm]*) die "$1 '$2': want N, Ns or Nm" ;;
    *m) n=${2%m}; suffix=60 ;;
    *s) n=${2%s}; suffix=1 ;;
    *) n=$2; suffix=1 ;;
    esac
    case $n in *[!0-9]* | '') die "$1 '$2': want N, Ns or Nm" ;; esac
    n=$((n * suffix))
    if [ "$n" -lt 1 ] || [ "$n" -gt "$3" ]; then die "$1 '$2': want 1s to ${3}s"; fi
    echo "$n"
}
# count NAME VALUE MAX: an integer in 1..MAX.
count() {
    case $2 in *[!0-9]* | '') die "$1 '$2': want a positive integer" ;; esac
    if [ "$2" -lt 1 ] || [ "$2" -gt "$3" ]; then die "$1 '$2': want 1 to $3"; fi
    echo "$2"
}

secs=$(seconds duration "$duration" 600)
tsecs=$(seconds timeout "$reply_timeout" 60)
connections=$(count connections "$connections" 1024)
threads=$(count threads "$threads" 64)
[ "$threads" -le "$connections" ] || threads=$connections

# Loopback or the compose service only.
case $url in
http://*) ;;
*) die "URL '$url': want http://HOST[:PORT]" ;;
esac
hostport=${url#http://}
hostport=${hostport%%/*}
case $hostport in
\[*\]*) host=${hostport%%]*}]; port=${hostport#"$host"} ;;
*) host=${hostport%%:*}; port=${hostport#"$host"} ;;
esac
case $port in '' | :[0-9]*) ;; *) die "URL '$url': bad port" ;; esac
case $port in :*[!0-9]*) die "URL '$url': bad port" ;; esac
ok=""
case $host in
localhost | '[::1]' | fanout) ok=1 ;;
127.*) echo "$host" | grep -Eq '^127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$' && ok=1 ;;
esac
[ -n "$ok" ] || die "URL '$url': only loopback (127.x.y.z, localhost, [::1]) or the compose service 'fanout'"

command -v wrk >/dev/null 2>&1 || die "wrk not found (Debian: apt-get install wrk)"
# shellcheck disable=SC2086 # $all is a list of words
[ $# -gt 0 ] || set -- $all
for name in "$@"; do
    name=${name%.lua}
    case $name in
    common | *[!a-z0-9_]* | '') die "script '$name': want one of: $all" ;;
    esac
    [ -r "$scripts_dir/$name.lua" ] || die "no script $scripts_dir/$name.lua"
done

# Fail early, and clearly, when nothing answers (curl is optional: the wrk image may lack it).
if command -v curl >/dev/null 2>&1; then
    curl -sf -m 5 -o /dev/null "$url/readyz" ||
        { echo "run-wrk: $url/readyz does not answer 200; is fanout running?" >&2; exit 1; }
fi

# wrk stops by itself after the duration; the guard is for a wrk that hangs.
guard=""
command -v timeout >/dev/null 2>&1 && guard="timeout $((secs + tsecs + 30))"

tmp=$(mktemp)
results=$(mktemp)
trap 'rm -f "$tmp" "$results"' EXIT
trap 'exit 130' INT TERM
status=0
echo "run-wrk: $url, ${secs}s per script, $connections connections, $threads threads"
for name in "$@"; do
    name=${name%.lua}
    echo
    echo "== $name: wrk -t$threads -c$connections -d${secs}s --timeout ${tsecs}s -s $scripts_dir/$name.lua $url"
    rc=0
    $guard wrk -t"$threads" -c"$connections" -d"${secs}s" --timeout "${tsecs}s" \
        -s "$scripts_dir/$name.lua" "$url" >"$tmp" 2>&1 || rc=$?
    cat "$tmp"
    line=$(grep '^RESULT {' "$tmp" | tail -n 1 || true)
    if [ "$rc" -ne 0 ] || [ -z "$line" ]; then
        why="exit $rc"
        [ -n "$line" ] || why="$why, no RESULT line"
        echo "run-wrk: $name failed ($why)" >&2
        status=1
        continue
    fi
    echo "${line#RESULT }" >>"$results"
    [ -z "$out" ] || echo "${line#RESULT }" >>"$out"
done

# One table of the RESULT lines (flat numeric fields, so a pattern match reads them).
if [ -s "$results" ]; then
    echo
    awk '
    function field(line, key,   m) {
        if (match(line, "\"" key "\":[^,}]*")) {
            m = substr(line, RSTART, RLENGTH); sub(/^[^:]*:/, "", m); gsub(/"/, "", m); return m
        }
        return "?"
    }
    BEGIN { printf "%-9s %10s %11s %9s %9s %9s %7s %7s %7s\n", "script", "req/s", "queries/s",
            "p50 ms", "p90 ms", "p99 ms", "non200", "q.errs", "sockerr" }
    { printf "%-9s %10.1f %11.1f %9.2f %9.2f %9.2f %7d %7d %7d\n", field($0, "script"),
             field($0, "rps"), field($0, "qps"), field($0, "p50_ms"), field($0, "p90_ms"),
             field($0, "p99_ms"), field($0, "non200"), field($0, "query_errors"),
             field($0, "socket_errors") }' "$results"
fi
exit $status
