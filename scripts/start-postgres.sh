#!/bin/sh
# Start a private PostgreSQL server on 127.0.0.1 for the sweep tests and print its URL.
#
#   eval "$(sh scripts/start-postgres.sh)"   # exports RESEARCH_TEST_POSTGRES_URL
#
# Installs Debian's `postgresql` package when it is missing (needs root and
# apt), creates a cluster in $RESEARCH_PG_DIR (default /var/tmp/research-postgres)
# listening on 127.0.0.1:$RESEARCH_PG_PORT (default 55432) only, and a database
# `research_test`. Running it again, or while the server runs, reuses both.
# Progress goes to stderr; stdout carries only the export line.
set -eu

PG_DIR="${RESEARCH_PG_DIR:-/var/tmp/research-postgres}"
PG_PORT="${RESEARCH_PG_PORT:-55432}"
PG_DB="research_test"
PG_USER="research"
PG_PASSWORD="research"

log() { echo "start-postgres: $*" >&2; }

find_bin() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

BIN="$(find_bin)"
if [ -z "$BIN" ]; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        log "PostgreSQL is not installed and cannot be installed here (needs root and apt-get)"
        exit 1
    fi
    log "installing Debian's postgresql package"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    BIN="$(find_bin)"
fi

# The server refuses to run as root, so root runs it as the `postgres` user.
if [ "$(id -u)" = 0 ]; then
    OWNER=postgres
    as_owner() { runuser -u "$OWNER" -- "$@"; }
else
    OWNER="$(id -un)"
    as_owner() { "$@"; }
fi

mkdir -p "$PG_DIR"
chown "$OWNER" "$PG_DIR"
if [ ! -f "$PG_DIR/data/PG_VERSION" ]; then
    log "creating a cluster in $PG_DIR/data"
    as_owner "$BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 >/dev/null
fi

if as_owner "$BIN/pg_ctl" -D "$PG_DIR/data" status >/dev/null 2>&1; then
    log "server already running in $PG_DIR/data"
else
    log "starting the server on 127.0.0.1:$PG_PORT"
    as_owner "$BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w \
        -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR" start >/dev/null
fi

psql_admin() { as_owner "$BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -qtA "$@"; }
if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER'")" != 1 ]; then
    psql_admin -c "CREATE ROLE $PG_USER LOGIN PASSWORD '$PG_PASSWORD'" >/dev/null
fi
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != 1 ]; then
    psql_admin -c "CREATE DATABASE $PG_DB OWNER $PG_USER" >/dev/null
fi

URL="postgresql://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB"
log "ready: $URL"
echo "export RESEARCH_TEST_POSTGRES_URL=$URL"
