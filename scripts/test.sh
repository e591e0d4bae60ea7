#!/bin/sh
# Run every unit test, then the integration suite against a throwaway PostgreSQL that this script
# starts and always stops. Usage: test.sh BUILD_DIR [WRAPPER...]
#   WRAPPER (e.g. valgrind ...) is put in front of every fanout process the integration tests start.
# Prints one closing line "tests: N passed, N failed" and exits non-zero on any failure.
set -u
build=${1:?usage: test.sh BUILD_DIR [WRAPPER...]}; shift
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here" || exit 1

passed=0 failed=0 broken=""
# run NAME CMD...: run a cmocka binary and add up its counts.
run() {
    name=$1; shift
    out=$(mktemp)
    "$@" >"$out" 2>&1; rc=$?
    cat "$out"
    # A binary may run several cmocka groups: add up every group's closing lines.
    p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$out" | awk '{s += $1} END {if (NR) print s}')
    f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$out" | awk '{s += $1} END {if (NR) print s}')
    passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
    if [ "$rc" != 0 ] || [ -z "$p$f" ]; then broken="$broken $name"; fi
    rm -f "$out"
}

for t in "$build"/tests/test_*; do
    run "$(basename "$t")" "$t"
done

pg=$(scripts/localpg.sh start-temp) || { echo "test: could not start PostgreSQL" >&2; exit 1; }
pgdir=$(echo "$pg" | head -n 1)
trap 'scripts/localpg.sh stop-temp "$pgdir"' EXIT INT TERM
FANOUT_TEST_DATABASE=$(echo "$pg" | tail -n 1)
FANOUT_TEST_ADMIN="host=$pgdir/run dbname=fanout_test user=postgres"
FANOUT_TEST_PGDIR=$pgdir
FANOUT_BIN="$build/fanout"
FANOUT_WRAPPER="$*"
export FANOUT_TEST_DATABASE FANOUT_TEST_ADMIN FANOUT_TEST_PGDIR FANOUT_BIN FANOUT_WRAPPER
run integration "$build/tests/integration"

# Under make valgrind: one summary over every fanout process the suite started.
if [ -n "${VALGRIND_LOGS:-}" ]; then
    logs=$(ls "$VALGRIND_LOGS"/*.log 2>/dev/null | wc -l)
    lost=$(sed -n 's/.*definitely lost: \([0-9,]*\) bytes.*/\1/p' "$VALGRIND_LOGS"/*.log | tr -d , |
        awk '{s += $1} END {print s + 0}')
    errs=$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$VALGRIND_LOGS"/*.log |
        awk '{s += $1} END {print s + 0}')
    echo
    echo "valgrind: $logs fanout processes, definitely lost: $lost bytes, ERROR SUMMARY: $errs errors"
    if [ "$lost" != 0 ] || [ "$errs" != 0 ]; then
        grep -l "definitely lost: [1-9]\|ERROR SUMMARY: [1-9]" "$VALGRIND_LOGS"/*.log
        broken="$broken valgrind"
    fi
fi

echo
if [ -n "$broken" ]; then
    echo "failing suites:$broken"
    echo "tests: $passed passed, $failed failed"
    exit 1
fi
echo "tests: $passed passed, $failed failed"
