#!/usr/bin/env bash
# PostgreSQL and Redis for tests/integration, on loopback only, in a
# temporary directory, on non-default ports.
#
#   eval "$(bash scripts/services.sh start)"   # installs if missing, starts, prints exports
#   bash scripts/services.sh stop              # stops them (by PID), removes the directory
#
# `start` prints `export NAME=value` lines on stdout (everything else goes to
# stderr): TOKIOLOOP_PG_DSN and TOKIOLOOP_REDIS_URL (TCP on 127.0.0.1),
# TOKIOLOOP_PG_SOCKET_DIR and TOKIOLOOP_REDIS_SOCKET (the same servers over
# Unix sockets) and TOKIOLOOP_SERVICES_DIR, which `stop` reads (or pass the
# directory as its second argument).
# Ports: TOKIOLOOP_PG_PORT (default 64329) and TOKIOLOOP_REDIS_PORT (default
# 63799), both above Linux's ephemeral range (32768-60999 by default), where
# a client connection's local port can hold the address (PostgreSQL then
# fails to bind though nothing listens); a port already in use is replaced
# by a free one.
set -euo pipefail

log() { echo "services: $*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        log "need root to run: $*"; return 1; fi
}

apt_install() {
    log "installing $*"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get install -y -qq "$@" >&2 || {
        as_root apt-get update -qq >&2
        as_root apt-get install -y -qq "$@" >&2
    }
}

pg_bindir() {
    local dir
    if command -v pg_config >/dev/null && dir="$(pg_config --bindir 2>/dev/null)" \
        && [ -x "$dir/initdb" ]; then
        echo "$dir"; return 0
    fi
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    [ -n "$dir" ] && [ -x "$dir/initdb" ] && { echo "$dir"; return 0; }
    dir="$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/x)")"
    [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && { echo "$dir"; return 0; }
    return 1
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

pick_port() {  # pick_port DEFAULT -> DEFAULT, or a free port if DEFAULT is taken
    local port="$1" py
    if ! port_in_use "$port"; then echo "$port"; return 0; fi
    py="$(command -v python3 || command -v python)"
    log "port $port is in use, picking a free one"
    "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Run a command as the PostgreSQL server user: initdb and postgres refuse root.
PG_USER=""
as_pg_user() {
    if [ -n "$PG_USER" ]; then
        if command -v runuser >/dev/null; then runuser -u "$PG_USER" -- "$@"
        else su -s /bin/sh "$PG_USER" -c "$(printf '%q ' "$@")"; fi
    else
        "$@"
    fi
}

start() {
    local bindir
    if ! bindir="$(pg_bindir)"; then
        apt_install postgresql
        bindir="$(pg_bindir)" || { log "no PostgreSQL after install"; exit 1; }
    fi
    if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
        apt_install redis-server
    fi

    local pg_port redis_port
    dir="$(mktemp -d "${TMPDIR:-/tmp}/tokioloop-services.XXXXXX")"
    chmod 755 "$dir"
    # If anything below fails, stop whatever did start and remove $dir.
    started=0
    trap '[ "$started" = 1 ] || stop "$dir"' EXIT
    pg_port="$(pick_port "${TOKIOLOOP_PG_PORT:-64329}")"
    redis_port="$(pick_port "${TOKIOLOOP_REDIS_PORT:-63799}")"

    # --- PostgreSQL: its own cluster, trust auth, TCP on loopback only.
    mkdir -p "$dir/pg"
    if [ "$(id -u)" = 0 ]; then
        PG_USER=postgres
        id -u "$PG_USER" >/dev/null 2>&1 \
            || as_root useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_USER"
        chown "$PG_USER" "$dir/pg"
    fi
    as_pg_user "$bindir/initdb" -D "$dir/pg/data" -U postgres --auth=trust \
        --encoding=UTF8 --locale=C >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    as_pg_user "$bindir/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/postgres.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $dir/pg -c fsync=off \
            -c synchronous_commit=off -c full_page_writes=off -c max_connections=50" \
        start >&2 || { cat "$dir/pg/postgres.log" >&2; exit 1; }
    head -n 1 "$dir/pg/data/postmaster.pid" >"$dir/postgres.pid"

    # --- Redis: no persistence, loopback only.
    redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$dir" --save "" \
        --unixsocket "$dir/redis.sock" --unixsocketperm 700 --appendonly no --daemonize yes --pidfile "$dir/redis.pid" \
        --logfile "$dir/redis.log" >&2
    local i
    for i in $(seq 1 100); do
        if redis-cli -h 127.0.0.1 -p "$redis_port" ping >/dev/null 2>&1; then break; fi
        sleep 0.1
    done
    redis-cli -h 127.0.0.1 -p "$redis_port" ping >/dev/null \
        || { cat "$dir/redis.log" >&2; exit 1; }

    log "PostgreSQL on 127.0.0.1:$pg_port (pid $(cat "$dir/postgres.pid")), Redis on" \
        "127.0.0.1:$redis_port (pid $(cat "$dir/redis.pid")), state in $dir"
    started=1
    echo "export TOKIOLOOP_SERVICES_DIR=$dir"
    echo "export TOKIOLOOP_PG_DSN=postgresql://postgres@127.0.0.1:$pg_port/postgres"
    echo "export TOKIOLOOP_PG_SOCKET_DIR=$dir/pg"
    echo "export TOKIOLOOP_REDIS_URL=redis://127.0.0.1:$redis_port/0"
    echo "export TOKIOLOOP_REDIS_SOCKET=$dir/redis.sock"
}

stop_pid() {  # stop_pid NAME PIDFILE SIGNAL
    local name="$1" pidfile="$2" sig="$3" pid i
    [ -s "$pidfile" ] || return 0
    pid="$(head -n 1 "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "-$sig" "$pid" 2>/dev/null || true
        for i in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name (pid $pid) still running, killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        log "stopped $name (pid $pid)"
    fi
}

stop() {
    local dir="${1:-${TOKIOLOOP_SERVICES_DIR:-}}"
    if [ -z "$dir" ] || [ ! -d "$dir" ]; then
        log "nothing to stop (no TOKIOLOOP_SERVICES_DIR)"; return 0
    fi
    case "$(basename "$dir")" in
        tokioloop-services.*) ;;
        *) log "refusing to remove $dir: not a services directory"; exit 1 ;;
    esac
    # SIGINT is PostgreSQL's "fast shutdown"; SIGTERM makes Redis exit cleanly.
    stop_pid postgres "$dir/postgres.pid" INT
    stop_pid redis "$dir/redis.pid" TERM
    rm -rf "$dir"
}

case "${1:-}" in
    start) start ;;
    stop) stop "${2:-}" ;;
    *) echo "usage: $0 start | stop [DIR]" >&2; exit 2 ;;
esac
