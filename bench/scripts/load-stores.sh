#!/usr/bin/env bash
# Requests per second of the demo's /peek (read a session) and /visits (read and write it), for
# each store, under a short loopback load from wrk: one hot session, 16 connections.
#
#   bench/scripts/load-stores.sh [SECONDS]   # per route and store; default 5
#
# Needs wrk (Debian's package), and the servers of scripts/test: PostgreSQL on 5432, Redis on
# 6379; it starts a Redis Cluster on 7331-7333 and stops it at the end. Prints a Markdown table.
# The counter after /visits is below the number of requests: 16 connections increment one
# session at once, and of two requests that read the same count, the last write wins.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-5}
port=3190
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }

cargo build -q --release --example demo --features sqlite,postgres,redis
demo=target/release/examples/demo
dir=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    scripts/redis-cluster.sh stop 7331 >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT
cluster=$(scripts/redis-cluster.sh start 7331 | tail -1)

rps() { # ROUTE COOKIE: requests per second, and the failed ones (non-2xx, socket errors)
    wrk -t1 -c16 -d"${seconds}s" -H "Cookie: $2" "http://127.0.0.1:$port/$1" |
        awk '/Requests\/sec/ { rps = $2 }
             /Non-2xx/ { failed += $NF }
             /Socket errors/ { gsub(/[^0-9 ]/, " "); for (i = 1; i <= NF; i++) failed += $i }
             END { printf "%.0f (%d failed)", rps, failed }'
}

echo "| store | /peek req/s | /visits req/s |"
echo "| --- | ---: | ---: |"
for store in memory "sqlite://$dir/load.db" postgres://postgres@127.0.0.1:5432/test \
    redis://127.0.0.1:6379 "$cluster"; do
    SESSION_SECRETS=load-secret-0123456789-abcdefghijklmnopq SESSION_STORE=$store \
        PORT=$port RUST_LOG=warn "$demo" >"$dir/demo.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        curl -fs "http://127.0.0.1:$port/health" >/dev/null && break
        sleep 0.1
    done
    cookie=$(curl -fs -D - -o /dev/null "http://127.0.0.1:$port/visits" |
        awk -F'[:;] *' 'tolower($1) == "set-cookie" { print $2 }')
    [ -n "$cookie" ] || { echo "no session cookie from $store" >&2; cat "$dir/demo.log" >&2; exit 1; }
    peek=$(rps peek "$cookie")
    visits=$(rps visits "$cookie")
    count=$(curl -fs -H "Cookie: $cookie" "http://127.0.0.1:$port/peek")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=
    echo "| ${store%%://*} | $peek | $visits (counter: $count) |"
done
