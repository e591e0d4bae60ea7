#!/bin/sh
# A private PostgreSQL for development and tests, reachable only through a unix socket in its own
# directory (listen_addresses is empty, so it never takes a TCP port).
#
#   localpg.sh start-run    the cluster `make run` uses: ./var/pg, kept between runs, demo data
#   localpg.sh stop-run     stop it
#   localpg.sh start-temp   a throwaway cluster under a new temp dir; prints DIR then the conninfo
#                           (members of role fanout_password_login must log in with a password)
#   localpg.sh stop-temp DIR
#   localpg.sh server-stop DIR | server-start DIR   stop/start a temp cluster's server, keeping it
#                                                   (fault tests take the database away)
#
# PostgreSQL refuses to run as root: as root, every server command runs as the `postgres` user,
# so the cluster lives where that user can reach it. start-* print the conninfo of the `fanout`
# role (not a superuser) on stdout; messages go to stderr.
set -eu

PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
[ -x "$PGBIN/initdb" ] || { echo "localpg: no PostgreSQL server binaries (run make deps)" >&2; exit 1; }
here=$(cd "$(dirname "$0")/.." && pwd)

# as_pg CMD...: run a command as the cluster's owner, from a directory it can read.
as_pg() {
    if [ "$(id -u)" = 0 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && "$@")
    fi
}

# init DIR: create the cluster in DIR/data with its socket in DIR/run.
init() {
    dir=$1
    mkdir -p "$dir/run"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir" "$dir/run"
    chmod 0700 "$dir/run"
    as_pg "$PGBIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log" >&2; exit 1; }
    chmod 0700 "$dir/data"
    cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$dir/run'
max_connections = 200
CONF
}

start() {
    dir=$1
    if ! as_pg "$PGBIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        as_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/postgresql.log" -w -t 60 start >/dev/null ||
            { tail -n 20 "$dir/postgresql.log" >&2; exit 1; }
    fi
}

psql_admin() {
    dir=$1; shift
    as_pg psql -X -q -v ON_ERROR_STOP=1 -h "$dir/run" -U postgres "$@"
}

# create_db DIR NAME: the `fanout` role and a database it owns.
create_db() {
    dir=$1 db=$2
    psql_admin "$dir" -d postgres -c "CREATE ROLE fanout LOGIN" -c "CREATE DATABASE $db OWNER fanout" >/dev/null
}

# The run cluster lives in ./var unless the postgres user cannot reach it (a clone under /root):
# then in a folder of the system temp dir named for the checkout.
run_dir() {
    if [ "$(id -u)" != 0 ] || runuser -u postgres -- test -x "$here" 2>/dev/null; then
        echo "$here/var/pg"
    else
        sum=$(printf '%s' "$here" | cksum | cut -d' ' -f1)
        echo "${TMPDIR:-/tmp}/fanout-$(basename "$here")-$sum/pg"
    fi
}

case "${1:-}" in
start-run)
    dir=$(run_dir)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        echo "localpg: creating a PostgreSQL cluster in $dir" >&2
        init "$dir"
        start "$dir"
        create_db "$dir" fanout
        as_pg psql -X -q -v ON_ERROR_STOP=1 -h "$dir/run" -U fanout -d fanout -f - <"$here/scripts/demo.sql" >/dev/null
    else
        start "$dir"
    fi
    echo "localpg: PostgreSQL in $dir (psql -h $dir/run -U fanout fanout)" >&2
    echo "host=$dir/run dbname=fanout user=fanout"
    ;;
stop-run)
    dir=$(run_dir)
    if [ -f "$dir/data/PG_VERSION" ]; then
        as_pg "$PGBIN/pg_ctl" -D "$dir/data" -w -m fast stop >/dev/null 2>&1 || true
        echo "localpg: stopped PostgreSQL in $dir" >&2
    fi
    ;;
start-temp)
    dir=$(mktemp -d "${TMPDIR:-/tmp}/fanout-test.XXXXXX")
    chmod 0755 "$dir"
    init "$dir"
    # A throwaway cluster: durability is worth nothing here.
    printf 'fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n' >>"$dir/data/postgresql.conf"
    # Every login is trusted, except for members of the role fanout_password_login (which the
    # tests create): they must give a password, so a passfile is really put to use.
    { echo "local all +fanout_password_login scram-sha-256"; cat "$dir/data/pg_hba.conf"; } >"$dir/hba.new"
    cat "$dir/hba.new" >"$dir/data/pg_hba.conf" && rm -f "$dir/hba.new"
    start "$dir"
    create_db "$dir" fanout_test
    echo "$dir"
    echo "host=$dir/run dbname=fanout_test user=fanout"
    ;;
stop-temp)
    dir=${2:?stop-temp needs the directory}
    case "$dir" in */fanout-test.*) ;; *) echo "localpg: refusing to remove $dir" >&2; exit 1 ;; esac
    as_pg "$PGBIN/pg_ctl" -D "$dir/data" -w -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
server-stop)
    dir=${2:?server-stop needs the directory}
    as_pg "$PGBIN/pg_ctl" -D "$dir/data" -w -m fast stop >/dev/null
    ;;
server-start)
    dir=${2:?server-start needs the directory}
    start "$dir"
    ;;
*)
    echo "usage: localpg.sh start-run | stop-run | start-temp | stop-temp DIR | server-stop DIR | server-start DIR" >&2
    exit 2
    ;;
esac
