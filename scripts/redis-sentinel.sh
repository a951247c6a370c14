#!/usr/bin/env bash
# Starts or stops a Redis primary, a replica and a Sentinel watching them, on loopback, for the
# Redis store tests.
#
#   scripts/redis-sentinel.sh start [FIRST_PORT]   # prints the Sentinel URL on its last line
#   scripts/redis-sentinel.sh stop  [FIRST_PORT]
#
# The primary listens on 127.0.0.1:FIRST_PORT (default 7330, or $REDIS_SENTINEL_FIRST_PORT),
# its replica on FIRST_PORT+1 and the Sentinel on FIRST_PORT+2, which knows the primary as
# `session-engine`; the replica is there so that the Sentinel can fail over to it
# (`redis-cli -p FIRST_PORT+2 sentinel failover session-engine`). Nothing is kept on disk
# but the Sentinel's own configuration, in a temporary directory that `stop` removes. `start`
# first stops the servers an earlier run of it left, refuses ports that something else holds,
# and stops what it started if it fails half-way. `stop` only ever stops servers this script
# started (found by their pidfiles).
set -euo pipefail

command=${1:?usage: $0 start|stop [FIRST_PORT]}
first=${2:-${REDIS_SENTINEL_FIRST_PORT:-7330}}
primary=$first
replica=$((first + 1))
sentinel=$((first + 2))
name=session-engine
dir="${TMPDIR:-/tmp}/session-engine-redis-sentinel-$first"

script=redis-sentinel
# shellcheck source=scripts/redis-servers.sh
source "$(dirname "$0")/redis-servers.sh"

replica_in_sync() {
    redis-cli -h 127.0.0.1 -p "$replica" info replication | grep -q '^master_link_status:up'
}

sentinel_ready() { # the Sentinel names the primary, and could promote its replica now
    local replicas
    [ "$(redis-cli -h 127.0.0.1 -p "$sentinel" sentinel get-master-addr-by-name "$name" |
        tail -1)" = "$primary" ] || return 1
    replicas=$(redis-cli -h 127.0.0.1 -p "$sentinel" sentinel replicas "$name" | paste - -)
    grep -qx $'port\t'"$replica" <<<"$replicas" &&
        grep -qx $'flags\tslave' <<<"$replicas" &&
        grep -qx $'master-link-status\tok' <<<"$replicas"
}

case $command in
start)
    begin "$primary" "$replica" "$sentinel"
    server() { # PORT ARGS...
        local port=$1
        shift
        redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
            --daemonize yes --logfile "$dir/$port.log" --pidfile "$dir/$port.pid" "$@"
    }
    server "$primary"
    wait_for "the primary answering" redis-cli -h 127.0.0.1 -p "$primary" ping
    server "$replica" --replicaof 127.0.0.1 "$primary"
    wait_for "the replica in sync" replica_in_sync
    # A Sentinel rewrites its configuration file, so it gets one of its own.
    printf '%s\n' "sentinel monitor $name 127.0.0.1 $primary 1" \
        "sentinel down-after-milliseconds $name 2000" \
        "sentinel failover-timeout $name 10000" >"$dir/sentinel.conf"
    redis-server "$dir/sentinel.conf" --sentinel --port "$sentinel" --bind 127.0.0.1 \
        --dir "$dir" --daemonize yes --logfile "$dir/$sentinel.log" \
        --pidfile "$dir/$sentinel.pid"
    wait_for "the Sentinel watching the primary and its replica" sentinel_ready
    echo "redis-sentinel://127.0.0.1:$sentinel?sentinelServiceName=$name"
    ;;
stop)
    stop
    ;;
*)
    echo "usage: $0 start|stop [FIRST_PORT]" >&2
    exit 2
    ;;
esac
