#!/usr/bin/env python3
"""Prints a Markdown table of the session libraries' overhead over the floor, from the
estimates that `cargo bench --bench compare` leaves under target/criterion.

Usage: python3 bench/scripts/compare-table.py [--median | --slope] [CRITERION_DIR]

CRITERION_DIR defaults to $CARGO_TARGET_DIR/criterion, else target/criterion in this repository.
Times are criterion's mean point estimates (median with --median, or the slope that criterion
prints as its headline with --slope), in nanoseconds per request. When the benches also ran with
`--no-default-features` (session-engine built without its `metrics` feature), a last column
gives that build's overhead over its own floor.
"""

import json
import os
import sys
from pathlib import Path

LIBRARIES = [
    "session-engine",
    "tower-sessions",
    "axum_session",
    "session-engine-touch-every-request",
    "session-engine-users-store",
]
FLOOR = ("a_floor", "no-layer")
# The benches of the build without the library's `metrics` feature: session-engine alone, and
# the floor measured in that build.
WITHOUT_METRICS = "session-engine-without-metrics"
FLOOR_WITHOUT_METRICS = ("a_floor", "no-layer-without-metrics")
SCENARIOS = [
    ("b_untouched", "b: layer, session untouched"),
    ("c_new_visitor", "c: new visitor sets"),
    ("d_read", "d: returning visitor reads"),
    ("e_increment", "e: returning visitor increments"),
]


def estimate(root, group, bench, statistic):
    path = root / group / bench / "new" / "estimates.json"
    try:
        with path.open() as file:
            return json.load(file)[statistic]["point_estimate"]
    except FileNotFoundError:
        return None


def interval(root, group, bench, statistic):
    """The lower and upper bounds of criterion's confidence interval of the statistic."""
    path = root / group / bench / "new" / "estimates.json"
    try:
        with path.open() as file:
            bounds = json.load(file)[statistic]["confidence_interval"]
    except FileNotFoundError:
        return None
    return bounds["lower_bound"], bounds["upper_bound"]


def fmt(value):
    return "n/a" if value is None else f"{value:,.0f}"


def main(argv):
    statistic = "mean"
    rest = []
    for arg in argv:
        if arg in ("--median", "--slope"):
            statistic = arg[2:]
        elif arg in ("-h", "--help"):
            print(__doc__.strip())
            return 0
        else:
            rest.append(arg)
    if len(rest) > 1:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    if rest:
        root = Path(rest[0])
    elif os.environ.get("CARGO_TARGET_DIR"):
        root = Path(os.environ["CARGO_TARGET_DIR"]) / "criterion"
    else:
        root = Path(__file__).resolve().parents[2] / "target" / "criterion"

    floor = estimate(root, *FLOOR, statistic)
    if floor is None:
        print(f"no floor estimate under {root}; run `cargo bench --bench compare` first",
              file=sys.stderr)
        return 1

    bare_floor = estimate(root, *FLOOR_WITHOUT_METRICS, statistic)
    extra = [WITHOUT_METRICS] if bare_floor is not None else []
    print(f"Overhead over the floor, ns per request ({statistic}; floor = {fmt(floor)} ns"
          + (f", {fmt(bare_floor)} ns without metrics" if extra else "") + ")\n")
    print("| scenario | " + " | ".join(LIBRARIES + extra) + " | session-engine / tower-sessions |")
    print("| --- | " + " | ".join("---:" for _ in LIBRARIES + extra) + " | ---: |")
    for group, label in SCENARIOS:
        overheads = {}
        for library in LIBRARIES + extra:
            value = estimate(root, group, library, statistic)
            base = bare_floor if library == WITHOUT_METRICS else floor
            overheads[library] = None if value is None else value - base
        ours, theirs = overheads["session-engine"], overheads["tower-sessions"]
        ratio = "n/a" if ours is None or not theirs else f"{ours / theirs:.2f}"
        cells = " | ".join(fmt(overheads[library]) for library in LIBRARIES + extra)
        print(f"| {label} | {cells} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
