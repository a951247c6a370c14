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

script=redis-cluster
# shellcheck source=scripts/redis-servers.sh
source "$(dirname "$0")/redis-servers.sh"

cluster_ok() { # PORT
    redis-cli -h 127.0.0.1 -p "$1" cluster info | grep -q '^cluster_state:ok'
}

case $command in
start)
    begin "${ports[@]}"
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
