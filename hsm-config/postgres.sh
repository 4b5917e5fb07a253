#!/usr/bin/env bash
# A throw-away PostgreSQL cluster on a loopback port, for the tests and `make cluster`.
#
#   hsm-config/postgres.sh run DIR -- COMMAND...   start a cluster in DIR, run COMMAND with it, stop it (whatever COMMAND does)
#   hsm-config/postgres.sh start DIR               start a cluster in DIR and leave it running (DIR/env says how to reach it)
#   hsm-config/postgres.sh stop DIR                stop the cluster in DIR and remove it
#   hsm-config/postgres.sh pause DIR               stop the server only (its data stays), as a database outage
#   hsm-config/postgres.sh resume DIR              start it again on the same port
#
# Installs Debian's postgresql if missing. initdb refuses to run as root, so as root the cluster belongs to the
# unprivileged `postgres` user (the package makes it). Authentication is scram-sha-256 even on loopback, so the
# password file is really used. COMMAND sees:
#   COUNTERSIGN_TEST_POSTGRES   host:port/database:user
#   COUNTERSIGN_TEST_POSTGRES_PASSWORD_FILE   the password of that user (0600, readable by the caller only)
# The user may create databases (every test makes its own).
set -euo pipefail

command=${1:?usage: postgres.sh run|start|stop DIR [-- COMMAND...]}
directory=${2:?usage: postgres.sh run|start|stop DIR [-- COMMAND...]}
shift 2
port=${COUNTERSIGN_POSTGRES_PORT:-$((20000 + RANDOM % 20000))}

bindir() {
    local found
    found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
    if [ -z "$found" ]; then
        echo "installing: postgresql" >&2
        local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
        $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postgresql >/dev/null
        found=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    fi
    echo "$found"
}

# Runs a PostgreSQL program as the cluster's owner.
as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
    local bin; bin=$(bindir)
    rm -rf "$directory" && mkdir -p "$directory"
    chmod 700 "$directory"
    local cluster=$directory/cluster
    mkdir -p "$cluster"
    # The superuser's password and the test user's: random, in files, never on a command line.
    umask 077
    head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$directory/superuser-password"
    head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$directory/password"
    if [ "$(id -u)" = 0 ]; then
        chown -R postgres: "$cluster"
        install -o postgres -m 600 "$directory/superuser-password" "$cluster.pw"
        chmod 711 "$directory"
    else
        cp "$directory/superuser-password" "$cluster.pw"
    fi
    as_owner "$bin/initdb" -D "$cluster/data" -U postgres --auth=scram-sha-256 --pwfile="$cluster.pw" -E UTF8 --locale=C.UTF-8 >"$directory/initdb.log" 2>&1 ||
        { cat "$directory/initdb.log" >&2; exit 1; }
    rm -f "$cluster.pw"
    echo "$port" >"$directory/port"
    server_start
    # The test user, created over the socket as the superuser (its password passed on stdin, not a command line).
    local password; password=$(cat "$directory/password")
    PGPASSWORD=$(cat "$directory/superuser-password") as_owner "$bin/psql" -q -h "$cluster" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE ROLE countersign LOGIN CREATEDB PASSWORD '$password';
CREATE DATABASE countersign OWNER countersign;
SQL
    cat >"$directory/env" <<ENV
export COUNTERSIGN_TEST_POSTGRES=127.0.0.1:$port/countersign:countersign
export COUNTERSIGN_TEST_POSTGRES_PASSWORD_FILE=$directory/password
export COUNTERSIGN_POSTGRES_BIN=$bin
export COUNTERSIGN_POSTGRES_DATA=$cluster/data
ENV
}

# Descriptors this script inherited (beyond 0-2) are closed before the server starts: a daemon holding one (e.g. the
# socket Foundation's Process watches to see its child end) would make the caller wait until the server stops.
close_inherited() {
    local fd
    for fd in $(ls /proc/$BASHPID/fd); do
        if [ "$fd" -gt 2 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
}

server_start() {
    local bin; bin=$(bindir)
    local cluster=$directory/cluster
    close_inherited
    as_owner "$bin/pg_ctl" -D "$cluster/data" -l "$cluster/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -c port=$(cat "$directory/port") -c unix_socket_directories='$cluster' -c max_connections=300 -c fsync=on" \
        start >"$directory/pg_ctl.log" 2>&1 || { cat "$directory/pg_ctl.log" >&2; exit 1; }
    # (Nothing of the server's may hold the caller's stdout or stderr open: a caller reading them to their end would wait for ever.)
}

server_stop() {
    local bin; bin=$(bindir)
    as_owner "$bin/pg_ctl" -D "$directory/cluster/data" -m fast -w stop </dev/null >/dev/null 2>&1 || true
}

stop() {
    [ -f "$directory/env" ] || return 0
    server_stop
    rm -rf "$directory"
}

case $command in
    start) start; cat "$directory/env" ;;
    stop) stop ;;
    pause) server_stop ;;
    resume) server_start ;;
    run)
        [ "${1:-}" = "--" ] && shift
        start
        trap stop EXIT
        # shellcheck disable=SC1091
        source "$directory/env"
        "$@"
        ;;
    *) echo "usage: postgres.sh run|start|stop|pause|resume DIR [-- COMMAND...]" >&2; exit 2 ;;
esac
