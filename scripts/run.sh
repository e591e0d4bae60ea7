#!/bin/sh
# `make run`: serve on 127.0.0.1:8080 (or --listen). When no database is configured (no
# --database, FANOUT_DATABASE, DATABASE_URL, or `database` in the config file), first start the
# local PostgreSQL under ./var (created with demo data on first use, reused after) and use it.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
bin="$here/build/fanout"

configured=""
[ -n "${FANOUT_DATABASE:-}" ] && configured=env
[ -n "${DATABASE_URL:-}" ] && configured=env
config=${FANOUT_CONFIG:-}
prev=""
for arg in "$@"; do
    case "$arg" in
    --database | --database=*) configured=flag ;;
    --config=*) config=${arg#--config=} ;;
    esac
    [ "$prev" = "--config" ] && config=$arg
    prev=$arg
done
if [ -z "$configured" ] && [ -n "$config" ] && [ -r "$config" ] &&
    grep -Eq '^[[:space:]]*database[[:space:]]*=' "$config"; then
    configured=file
fi

if [ -z "$configured" ]; then
    conninfo=$("$here/scripts/localpg.sh" start-run)
    echo "run: using the local PostgreSQL ($conninfo); 'make stop' stops it" >&2
    exec "$bin" --database "$conninfo" "$@"
fi
exec "$bin" "$@"
