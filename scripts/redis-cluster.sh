#!/usr/bin/env bash
# Starts or stops a Redis Cluster of three masters on loopback, for the Redis store tests.
#
#   scripts/redis-cluster.sh start [FIRST_PORT]   # prints the cluster's URL on its last line
#   scripts/redis-cluster.sh stop  [FIRST_PORT]
#   REDIS_CLUSTER_REPLICAS=1 scripts/redis-cluster.sh start [FIRST_PORT]
#
# The nodes listen on 127.0.0.1, FIRST_PORT to FIRST_PORT+2 (default 7301, or
# $REDIS_CLUSTER_FIRST_PORT). With REDIS_CLUSTER_REPLICAS=1 (for scripts/reliability's
# failover), each master gets a replica, on FIRST_PORT+3 to FIRST_PORT+5, which the cluster
# promotes when its master fails; `start` returns once every replica is in sync. `stop` needs
# no such setting: it stops every node that a `start` on FIRST_PORT left. The nodes keep
# nothing on disk, and live in a temporary directory that
# `stop` removes. `start` first stops the nodes an earlier run of it left, refuses ports that
# some other server holds, and stops what it started if it fails half-way. `stop` only ever
# stops nodes this script started (found by their pidfiles).
set -euo pipefail

command=${1:?usage: $0 start|stop [FIRST_PORT]}
first=${2:-${REDIS_CLUSTER_FIRST_PORT:-7301}}
replicas=${REDIS_CLUSTER_REPLICAS:-0}
case $replicas in
0) ports=("$first" "$((first + 1))" "$((first + 2))") ;;
1) ports=("$first" "$((first + 1))" "$((first + 2))" "$((first + 3))" "$((first + 4))" "$((first + 5))") ;;
*)
    echo "redis-cluster: REDIS_CLUSTER_REPLICAS must be 0 or 1; got $replicas" >&2
    exit 2
    ;;
esac
dir="${TMPDIR:-/tmp}/session-engine-redis-cluster-$first"

script=redis-cluster
# shellcheck source=scripts/redis-servers.sh
source "$(dirname "$0")/redis-servers.sh"

cluster_ok() { # PORT
    redis-cli -h 127.0.0.1 -p "$1" cluster info | grep -q '^cluster_state:ok'
}

replica_in_sync() { # PORT: a replica whose link to its master is up
    redis-cli -h 127.0.0.1 -p "$1" info replication | grep -q '^master_link_status:up'
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
    redis-cli --cluster create "${ports[@]/#/127.0.0.1:}" --cluster-replicas "$replicas" \
        --cluster-yes >"$dir/create.log" 2>&1 ||
        { cat "$dir/create.log" >&2; exit 1; }
    for port in "${ports[@]}"; do
        wait_for "cluster_state:ok on $port" cluster_ok "$port"
    done
    for port in "${ports[@]:3}"; do
        wait_for "replica $port in sync" replica_in_sync "$port"
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
