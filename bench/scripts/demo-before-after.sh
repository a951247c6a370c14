#!/usr/bin/env bash
# The demo's GET /peek (a read) and GET /visits (a read and a write) on SQLite and PostgreSQL,
# at an older revision and at the working tree, measured side by side: req/s with wrk, one hot
# session, 32 connections. Rounds interleave the four servers (old and new, SQLite and
# PostgreSQL) so that drifts of the shared machine hit all alike; each row is the median of its
# rounds.
#
#   bench/scripts/demo-before-after.sh REV [ROUNDS] [SECONDS]   # 3 rounds of 4 s by default
#
# REV is checked out in a temporary git worktree and its demo built in release with the
# features `sqlite,postgres`, in a target directory kept under target/before-after/ so that a
# second run builds nothing. SQLite: a temporary file per revision. PostgreSQL
# (`POSTGRES_URL`, default postgres://postgres@127.0.0.1:5432/test): a schema per revision,
# made for the run and dropped at its end, even on failure. Everything binds 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/../.."
rev=${1:?usage: $0 REV [ROUNDS] [SECONDS]}
rounds=${2:-3}
seconds=${3:-4}
postgres=${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
port=4101
secret=demo-before-after-secret-0123456789abcdef

export PGOPTIONS=--client-min-messages=warning # psql: no NOTICE for a schema not there
for tool in wrk curl psql python3; do
    command -v "$tool" >/dev/null || { echo "$tool is missing" >&2; exit 1; }
done

old=$(mktemp -d)
tmp=$(mktemp -d)
schemas=(demo_before demo_after)
cleanup() {
    for pid in "$tmp"/*.pid; do
        [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
    done
    for schema in "${schemas[@]}"; do
        psql -q "$postgres" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
    done
    git worktree remove --force "$old" >/dev/null 2>&1 || true
    rm -rf "$old" "$tmp"
}
trap cleanup EXIT
git worktree add --detach "$old" "$rev" >/dev/null
old_target=$PWD/target/before-after/$(git rev-parse --short "$rev")

echo "building the demo of both revisions (release, sqlite and postgres)" >&2
build=(cargo build -q --release --example demo --features sqlite,postgres)
(cd "$old" && CARGO_TARGET_DIR=$old_target "${build[@]}")
"${build[@]}"

# A PostgreSQL URL whose connections work in SCHEMA: its search path names it alone.
in_schema() { # SCHEMA
    local separator='?'
    [[ $postgres == *\?* ]] && separator='&'
    echo "$postgres${separator}options=-c%20search_path%3D$1"
}

servers=()
start() { # LABEL BINARY STORE
    local label=$1 binary=$2 store=$3
    PORT=$port SESSION_SECRETS=$secret SESSION_STORE=$store "$binary" >"$tmp/$label.log" 2>&1 &
    echo $! >"$tmp/$label.pid"
    for _ in $(seq 150); do
        curl -sf -o /dev/null "http://127.0.0.1:$port/peek" && break
        sleep 0.2
    done
    curl -sf -o /dev/null "http://127.0.0.1:$port/peek" || {
        echo "$label did not answer; its log:" >&2
        cat "$tmp/$label.log" >&2
        exit 1
    }
    # One hot session: the cookie of a first /visits.
    curl -s -D - -o /dev/null "http://127.0.0.1:$port/visits" |
        awk 'tolower($1) == "set-cookie:" { sub(/;.*/, "", $2); print $2 }' | tr -d '\r' >"$tmp/$label.cookie"
    [ -s "$tmp/$label.cookie" ] || { echo "$label sent no cookie" >&2; exit 1; }
    echo "$port" >"$tmp/$label.port"
    servers+=("$label")
    port=$((port + 1))
}

for schema in "${schemas[@]}"; do
    psql -q "$postgres" -c "DROP SCHEMA IF EXISTS $schema CASCADE; CREATE SCHEMA $schema" >/dev/null
done
start "$rev-sqlite" "$old_target/release/examples/demo" "sqlite://$tmp/before.db"
start "now-sqlite" "target/release/examples/demo" "sqlite://$tmp/after.db"
start "$rev-postgres" "$old_target/release/examples/demo" "$(in_schema demo_before)"
start "now-postgres" "target/release/examples/demo" "$(in_schema demo_after)"

for round in $(seq "$rounds"); do
    echo "round $round of $rounds" >&2
    for route in peek visits; do
        for label in "${servers[@]}"; do
            rps=$(wrk -t1 -c32 -d"${seconds}s" -H "Cookie: $(cat "$tmp/$label.cookie")" \
                "http://127.0.0.1:$(cat "$tmp/$label.port")/$route" | awk '/^Requests\/sec/ { print $2 }')
            echo "$label $route ${rps:-0}" >>"$tmp/results"
        done
    done
done

python3 - "$tmp/results" "$rev" <<'PY'
import statistics, sys
from collections import defaultdict
path, rev = sys.argv[1:3]
values = defaultdict(list)
for line in open(path):
    label, route, rps = line.split()
    values[(label, route)].append(float(rps))
print(f"| store | route | {rev} req/s | now req/s | now / {rev} | rounds ({rev}) | rounds (now) |")
print("| --- | --- | ---: | ---: | ---: | --- | --- |")
for store in ("sqlite", "postgres"):
    for route in ("peek", "visits"):
        before, after = values[(f"{rev}-{store}", route)], values[(f"now-{store}", route)]
        old, new = statistics.median(before), statistics.median(after)
        ratio = new / old if old else float("nan")
        spread = lambda rounds: ", ".join(f"{v:,.0f}" for v in rounds)
        print(f"| {store} | /{route} | {old:,.0f} | {new:,.0f} | {ratio:.2f} | {spread(before)} "
              f"| {spread(after)} |")
PY
