#!/usr/bin/env bash
# In-process time per request of session-engine alone, at an older revision and at the working
# tree, measured in one run: the floor (a), a returning visitor's read (d) and write (e), each
# on the defaults of its revision. Rounds alternate (old, new, old, new, ...) so that drifts of
# the shared machine hit both alike; each row is the median of its rounds.
#
#   bench/scripts/before-after.sh REV [ROUNDS]   # ROUNDS defaults to 2
#
# REV is checked out in a temporary git worktree and benchmarked with its own benches/compare.rs
# (the layout before the `bench/` member) or bench/benches/compare.rs, and its own target
# directory, which is kept under target/before-after/ so that a second run builds nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
rev=${1:?usage: $0 REV [ROUNDS]}
rounds=${2:-2}
filter='^(a_floor/no-layer|d_read/session-engine|e_increment/session-engine)$'

old=$(mktemp -d)
results=$(mktemp)
cleanup() {
    git worktree remove --force "$old" >/dev/null 2>&1 || true
    rm -rf "$old" "$results"
}
trap cleanup EXIT
git worktree add --detach "$old" "$rev" >/dev/null
old_target=$PWD/target/before-after/$(git rev-parse --short "$rev")

# Runs the benchmark of one tree; appends "label bench ns" lines to $results.
run() { # LABEL DIR TARGET
    local label=$1 dir=$2 target=$3
    local bench=(cargo bench -q --bench compare)
    [ -f "$dir/bench/benches/compare.rs" ] && bench=(cargo bench -q -p session-engine-bench --bench compare)
    (cd "$dir" && CARGO_TARGET_DIR=$target "${bench[@]}" -- "$filter" >/dev/null 2>&1)
    python3 - "$label" "$target/criterion" >>"$results" <<'PY'
import json, sys
from pathlib import Path
label, root = sys.argv[1], Path(sys.argv[2])
for group, bench in [("a_floor", "no-layer"), ("d_read", "session-engine"), ("e_increment", "session-engine")]:
    estimates = json.loads((root / group / bench / "new" / "estimates.json").read_text())
    print(label, group, estimates["mean"]["point_estimate"])
PY
}

echo "building both revisions (release)" >&2
(cd "$old" && CARGO_TARGET_DIR=$old_target cargo bench -q --no-run $([ -f bench/benches/compare.rs ] && echo -p session-engine-bench) --bench compare >/dev/null 2>&1)
cargo bench -q --no-run -p session-engine-bench --bench compare >/dev/null 2>&1
for round in $(seq "$rounds"); do
    echo "round $round of $rounds" >&2
    run "$rev" "$old" "$old_target"
    run "working-tree" "$PWD" "$PWD/target"
done

python3 - "$results" "$rev" "$(git rev-parse --short HEAD)" <<'PY'
import statistics, sys
from collections import defaultdict
path, rev, head = sys.argv[1:4]
values = defaultdict(list)
for line in open(path):
    label, group, ns = line.split()
    values[(label, group)].append(float(ns))
median = {key: statistics.median(v) for key, v in values.items()}
labels = [rev, "working-tree"]
print(f"| measure (ns per request, mean, median of {len(values[(rev, 'a_floor')])} rounds) | {rev} | working tree (on {head}) | new / old |")
print("| --- | ---: | ---: | ---: |")
rows = [("a: floor (no layer)", "a_floor", False), ("d: returning visitor reads", "d_read", False),
        ("e: returning visitor increments", "e_increment", False),
        ("d over the floor", "d_read", True), ("e over the floor", "e_increment", True)]
for name, group, overhead in rows:
    old, new = (median[(l, group)] - (median[(l, "a_floor")] if overhead else 0) for l in labels)
    print(f"| {name} | {old:,.0f} | {new:,.0f} | {new / old:.2f} |")
PY
