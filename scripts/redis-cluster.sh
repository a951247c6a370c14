#!/usr/bin/env bash
# Starts or stops a Redis Cluster of three masters on loopback, for the Redis store tests.
#
#   scripts/redis-cluster.sh start [FIRST_PORT]   # prints the cluster's URL on its last line
#   scripts/redis-cluster.sh stop  [FIRST_PORT]
#
# The nodes listen on 127.0.0.1, FIRST_PORT to FIRST_PORT+2 (default 7301, or
# $REDIS_CLUSTER_FIRST_PORT), keep nothing on disk, and live in a temporary directory that
# `stop` removes. `start` first stops the nodes an earlier run of it left, refuses ports that
# some other server holds, and stops what it started if it fails half-way. `stop` only ever
# stops nodes this script started (found by their pidfiles).
set -euo pipefail

command=${1:?usage: $0 start|stop [FIRST_PORT]}
first=${2:-${REDIS_CLUSTER_FIRST_PORT:-7301}}
ports=("$first" "$((first + 1))" "$((first + 2))")
dir="${TMPDIR:-/tmp}/session-engine-redis-cluster-$first"

stop() { # stops only the nodes this script started: those with a pidfile in $dir
    local pidfile pid
    for pidfile in "$dir"/*.pid; do
        [ -e "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    done
    rm -rf "$dir"
}

wait_for() { # DESCRIPTION COMMAND...: retries COMMAND for up to 10 s
    local what=$1
    shift
    for _ in $(seq 100); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "redis-cluster: $what did not happen within 10 s; logs in $dir" >&2
    return 1
}

cluster_ok() { # PORT
    redis-cli -h 127.0.0.1 -p "$1" cluster info | grep -q '^cluster_state:ok'
}

case $command in
start)
    stop
    for port in "${ports[@]}"; do
        if redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then
            echo "redis-cluster: port $port is taken by a server this script did not start" >&2
            exit 1
        fi
    done
    trap 'status=$?; [ "$status" = 0 ] || stop; exit "$status"' EXIT
    mkdir -p "$dir"
    for port in "${ports[@]}"; do
        redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
            --cluster-config-file "$dir/nodes-$port.conf" --cluster-node-timeout 2000 \
            --save "" --appendonly no --dir "$dir" --daemonize yes \
            --logfile "$dir/$port.log" --pidfile "$dir/$port.pid"
    done
    for port in "${ports[@]}"; do
        wait_for "node $port answering" redis-cli -h 127.0.0.1 -p "$port" ping
    done
    redis-cli --cluster create "${ports[@]/#/127.0.0.1:}" --cluster-replicas 0 \
        --cluster-yes >"$dir/create.log" 2>&1 ||
        { cat "$dir/create.log" >&2; exit 1; }
    for port in "${ports[@]}"; do
        wait_for "cluster_state:ok on $port" cluster_ok "$port"
    done
    echo "redis-cluster://127.0.0.1:${ports[0]}?node=127.0.0.1:${ports[1]}&node=127.0.0.1:${ports[2]}"
    ;;
stop)
    stop
    ;;
*)
    echo "usage: $0 start|stop [FIRST_PORT]" >&2
    exit 2
    ;;
esac
