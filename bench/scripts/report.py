#!/usr/bin/env python3
"""Renders the results of one bench/scripts/bench run: every table, the targets computed from
the numbers, the machine and the run's command, from the raw rows the script left in DATA_DIR
(target/bench-results/data).

Usage: python3 bench/scripts/report.py DATA_DIR [--results FILE] [--benchmarks FILE]
                                               [--template FILE]

--results writes the tables alone (default: stdout); --benchmarks also writes the full document
(BENCHMARKS.md) from --template (default bench/scripts/BENCHMARKS.md.in), whose placeholders
{{run}}, {{machine}}, {{tables}}, {{targets}} and {{parts}} are replaced. Only numbers of this
run are used: the criterion table is left out unless criterion ran in this run and wrote its
estimates after the run started.
"""

import importlib.util
import os
import re
import statistics
import sys
from pathlib import Path

# compare-table.py is loaded as a module: leave no __pycache__ beside the scripts.
sys.dont_write_bytecode = True

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

LIB_NAMES = {
    "none": "none (no layer)",
    "engine": "session-engine",
    "tower": "tower-sessions",
    "axum_session": "axum_session",
}


def expiry_label(row):
    """The library of a row of the expiry part, with glibc's mmap threshold when it was set."""
    name = LIB_NAMES.get(row.get("lib"), row.get("lib"))
    threshold = number(row.get("mmap_threshold"))
    if threshold is None:
        return name
    return f"{name}, glibc mmap threshold {fmt_int(threshold // 1024)} KiB"


# ---- reading -------------------------------------------------------------------------------


def read_meta(data):
    meta = {}
    path = data / "meta.env"
    if path.exists():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                meta[key] = value
    return meta


def read_psv(path, fields):
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                values = line.split("|")
                rows.append(dict(zip(fields, values + [""] * (len(fields) - len(values)))))
    return rows


def read_results(path):
    """The RESULT lines of session_memory: key=value pairs."""
    results = []
    if path.exists():
        for line in path.read_text().splitlines():
            if line.startswith("RESULT "):
                results.append(dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv))
    return results


def number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def read_instructions(path):
    """The instructions part: scenario -> (instructions per request, of which SHA-256's
    compression function)."""
    counts = {}
    if path.exists():
        for line in path.read_text().splitlines():
            fields = line.split()
            if len(fields) == 3:
                counts[fields[0]] = (int(fields[1]), int(fields[2]))
    return counts


STALENESS_LINE = re.compile(
    r"^(?P<store>[^|]+)\|(?P<what>.*): p50 (?P<p50>[0-9.]+) us, p90 (?P<p90>[0-9.]+) us, "
    r"p99 (?P<p99>[0-9.]+) us, p99\.9 (?P<p999>[0-9.]+) us, max (?P<max>[0-9.]+) us "
    r"\((?P<trials>[0-9]+) trials\)$")


def read_staleness(path):
    """The staleness part: near_cache_staleness's percentile lines, each after its store
    ("redis|write acknowledged on A -> dropped on B: p50 … us, …, max … us (N trials)")."""
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            found = STALENESS_LINE.match(line.strip())
            if found:
                row = found.groupdict()
                for key in ("p50", "p90", "p99", "p999", "max"):
                    row[key] = float(row[key])
                rows.append(row)
    return rows


class Rows:
    """The rounds of the load parts, summarized per row."""

    def __init__(self, data):
        self.rows = read_psv(
            data / "rows.psv",
            ["part", "lib", "store", "route", "mode", "level", "round", "rps", "avg", "p99",
             "requests", "failed"],
        )
        self.checks = {
            (c["part"], c["lib"], c["store"], c["route"], c["mode"], c["level"]): c["text"]
            for c in read_psv(
                data / "checks.psv", ["part", "lib", "store", "route", "mode", "level", "text"]
            )
        }

    def get(self, part, lib, store, route, mode, level="-"):
        key = (part, lib, store, route, mode, level)
        rounds = [r for r in self.rows
                  if (r["part"], r["lib"], r["store"], r["route"], r["mode"], r["level"]) == key]
        if not rounds:
            return None
        rps = [number(r["rps"]) or 0.0 for r in rounds]
        avg = [v for v in (number(r["avg"]) for r in rounds) if v is not None]
        p99 = [v for v in (number(r["p99"]) for r in rounds) if v is not None]
        return {
            "rps": statistics.median(rps),
            "lo": min(rps),
            "hi": max(rps),
            "avg": statistics.median(avg) if avg else None,
            "p99": statistics.median(p99) if p99 else None,
            "requests": sum(int(number(r["requests"]) or 0) for r in rounds),
            "failed": sum(int(number(r["failed"]) or 0) for r in rounds),
            "rounds": len(rounds),
            "check": self.checks.get(key, ""),
        }

    def has(self, part):
        return any(r["part"] == part for r in self.rows)


# ---- formatting ----------------------------------------------------------------------------


def fmt_int(value):
    return "n/a" if value is None else f"{value:,.0f}"


def fmt_ratio(value):
    return "n/a" if value is None else f"{value:.2f}"


def fmt_latency(us):
    if us is None:
        return "?"
    if us < 1e3:
        return f"{us:.0f} µs"
    if us < 1e6:
        return f"{us / 1e3:.2f} ms"
    return f"{us / 1e6:.2f} s"


def fmt_mib(value):
    return "n/a" if value is None else f"{value / 1048576:.1f} MiB"


def plural(count, noun):
    return f"{count} {noun}" if str(count) == "1" else f"{count} {noun}s"


def ratio(a, b):
    return a / b if a is not None and b else None


def table(header, aligns, rows):
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join("---:" if a == "r" else "---" for a in aligns) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# ---- sections ------------------------------------------------------------------------------


class Report:
    def __init__(self, data):
        self.data = data
        self.meta = read_meta(data)
        self.rows = Rows(data)
        self.parts = {p["part"]: p for p in read_psv(
            data / "parts.psv", ["part", "status", "seconds", "note"])}
        self.seeds = read_psv(
            data / "seeds.psv", ["store", "lib", "level", "created", "seconds", "live"])
        self.memory = read_results(data / "memory.txt")
        self.expiry = read_results(data / "expiry.txt")
        self.instructions = read_instructions(data / "instructions.txt")
        self.instructions_bare = read_instructions(data / "instructions-without-metrics.txt")
        self.staleness = read_staleness(data / "staleness.txt")
        self.cleanup = read_results(data / "cleanup.txt")
        self.setting = lambda name: self.meta.get(f"setting_{name}", "?")
        self.criterion = self.load_criterion()

    # -- the run and the machine --

    def run_text(self):
        m = self.meta
        modified = []
        if m.get("src_modified") == "yes":
            modified.append("src/ modified")
        if m.get("bench_modified") == "yes":
            modified.append("bench/ modified")
        state = f" ({', '.join(modified)})" if modified else ""
        elapsed = int(number(m.get("elapsed")) or 0)
        return (
            f"{m.get('date', '?')}, commit {m.get('commit', '?')}{state}; "
            f"`{m.get('command', 'bench/scripts/bench')}` took {elapsed // 60} min {elapsed % 60} s."
        )

    def machine_text(self):
        m = self.meta
        sqlite = self.sqlite_versions()
        lines = [
            f"- CPU: {m.get('cpu', '?')}, {m.get('cores', '?')} cores; memory {m.get('memory', '?')}; "
            f"{m.get('os', '?')}, {m.get('kernel', '?')}",
            f"- {m.get('rustc', '?')}; {m.get('wrk', 'wrk ?')}; Redis {m.get('redis') or '?'}; "
            f"PostgreSQL {m.get('postgres') or '?'}; {sqlite}",
            f"- load average {m.get('load_before', '?')} at the start, {m.get('load_after', '?')} "
            "at the end. Servers, wrk, Redis, PostgreSQL and criterion share the cores; every "
            "server binds 127.0.0.1.",
            f"- wrk -t1 -c{self.setting('CONNECTIONS')} -d{self.setting('DURATION')}s --latency, "
            f"{plural(self.setting('ROUNDS'), 'round')} per row, interleaved; bench_server on 2 tokio "
            "worker threads.",
        ]
        return "\n".join(lines)

    @staticmethod
    def sqlite_versions():
        def locked(lock):
            try:
                text = (ROOT / lock).read_text()
            except OSError:
                return "?"
            found = re.search(r'name = "libsqlite3-sys"\nversion = "([^"]+)"', text)
            return found.group(1) if found else "?"

        return (f"SQLite bundled by libsqlite3-sys {locked('Cargo.lock')} (session-engine, sqlx "
                f"0.9) and {locked('bench/sqlx-peer/Cargo.lock')} (tower-sessions-sqlx-store, "
                "sqlx 0.8)")

    # -- criterion --

    def load_criterion(self):
        part = self.parts.get("criterion")
        if not part or part["status"] != "ok":
            return None
        spec = importlib.util.spec_from_file_location("compare_table", HERE / "compare-table.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if os.environ.get("CARGO_TARGET_DIR"):
            root = Path(os.environ["CARGO_TARGET_DIR"]) / "criterion"
        else:
            root = ROOT / "target" / "criterion"
        started = number(self.meta.get("started")) or 0
        # The benches that the pairs of the metrics' cost run again (see `load_pairs`): their
        # estimates of the full runs are those the script copied as the first pair, as the
        # later pairs overwrite criterion's own.
        first_pair = self.data / "criterion-pairs" / "1"
        paired = {module.FLOOR[1], module.FLOOR_WITHOUT_METRICS[1], "session-engine",
                  module.WITHOUT_METRICS}

        def root_of(bench):
            return first_pair if bench in paired and first_pair.is_dir() else root

        def is_fresh(group, bench):
            path = root_of(bench) / group / bench / "new" / "estimates.json"
            return path.exists() and path.stat().st_mtime >= started

        def fresh(group, bench):
            if not is_fresh(group, bench):
                return None
            return module.estimate(root_of(bench), group, bench, "mean")

        def bounds(group, bench):
            if not is_fresh(group, bench):
                return None
            return module.interval(root_of(bench), group, bench, "mean")

        floor = fresh(*module.FLOOR)
        if floor is None:
            return None
        overheads = {}
        for group, label in module.SCENARIOS:
            for library in module.LIBRARIES:
                value = fresh(group, library)
                overheads[(group, library)] = None if value is None else value - floor
        # session-engine built without its `metrics` feature, over that build's own floor;
        # and the overheads' extremes within criterion's confidence intervals, both builds.
        bare_floor = fresh(*module.FLOOR_WITHOUT_METRICS)
        extremes = {}
        floor_bounds = bounds(*module.FLOOR)
        bare_floor_bounds = bounds(*module.FLOOR_WITHOUT_METRICS)
        for group, label in module.SCENARIOS:
            value = fresh(group, module.WITHOUT_METRICS)
            overheads[(group, module.WITHOUT_METRICS)] = (
                None if value is None or bare_floor is None else value - bare_floor)
            for library, base in (("session-engine", floor_bounds),
                                  (module.WITHOUT_METRICS, bare_floor_bounds)):
                mean = bounds(group, library)
                if mean is not None and base is not None:
                    # The least and the most overhead the intervals allow.
                    extremes[(group, library)] = (mean[0] - base[1], mean[1] - base[0])
        return {"floor": floor, "bare_floor": bare_floor, "overheads": overheads,
                "extremes": extremes, "module": module, "pairs": self.load_pairs(module)}

    def load_pairs(self, module):
        """The metrics' cost in time, pair by pair: session-engine's benches of the build with
        the feature and of the build without it, run one right after the other, each pair's
        estimates copied by the script into DATA_DIR/criterion-pairs/N. Per scenario, the list
        of (with, without) overheads over each build's own floor, one per complete pair."""
        pairs = {group: [] for group, _ in module.SCENARIOS}
        root = self.data / "criterion-pairs"
        if not root.is_dir():
            return pairs
        for pair in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name):
            floor_on = module.estimate(pair, *module.FLOOR, "mean")
            floor_off = module.estimate(pair, *module.FLOOR_WITHOUT_METRICS, "mean")
            for group, _ in module.SCENARIOS:
                on = module.estimate(pair, group, "session-engine", "mean")
                off = module.estimate(pair, group, module.WITHOUT_METRICS, "mean")
                if None not in (floor_on, floor_off, on, off):
                    pairs[group].append((on - floor_on, off - floor_off))
        return pairs

    @staticmethod
    def pair_ratios(pairs):
        """The with / without ratio of each pair, and their median (None without a pair)."""
        ratios = [ratio(on, off) for on, off in pairs]
        ratios = [r for r in ratios if r is not None]
        return ratios, (statistics.median(ratios) if ratios else None)

    def criterion_section(self):
        out = ["## In-process time per request (criterion, bench/benches/compare.rs)", ""]
        c = self.criterion
        if c is None:
            out.append(self.not_run("criterion"))
            return "\n".join(out)
        module = c["module"]
        out.append(f"Overhead over the floor, ns per request (criterion's mean; floor = "
                   f"{fmt_int(c['floor'])} ns: an axum `Router` with no session layer).")
        out.append("")
        rows = []
        for group, label in module.SCENARIOS:
            cells = [fmt_int(c["overheads"][(group, lib)]) for lib in module.LIBRARIES]
            ours = c["overheads"][(group, "session-engine")]
            theirs = c["overheads"][(group, "tower-sessions")]
            rows.append([label] + cells + [fmt_ratio(ratio(ours, theirs))])
        out.append(table(["scenario"] + module.LIBRARIES + ["session-engine / tower-sessions"],
                         ["l"] + ["r"] * (len(module.LIBRARIES) + 1), rows))
        out.append("")
        out.append(
            "session-engine's rows record its metrics (the default feature `metrics`) into "
            "Prometheus' recorder, installed as the observability guide installs it; the cost "
            "of that is in \"The cost of the metrics\" below. "
            "session-engine-touch-every-request: `touch_interval(0)`, the expiry moved on every "
            "request (the default moves it at most every min(60 s, duration / 10)); "
            "session-engine-users-store: the same engine on a store of the app's own, written "
            "outside the crate, that answers at once. Both are shown beside the defaults, not "
            "compared.")
        return "\n".join(out)

    def not_run(self, part):
        p = self.parts.get(part)
        if p is None:
            return "Not measured in this run (the part did not run)."
        if p["status"] != "ok":
            return f"Not measured in this run: {p['status']}{': ' + p['note'] if p['note'] else ''}."
        return "Not measured in this run."

    # -- HTTP, memory stores --

    def floor(self, mode):
        row = self.rows.get("http", "none", "memory", "a", mode)
        return row["rps"] if row else None

    def http_section(self):
        out = ["## HTTP throughput, memory stores", ""]
        if not self.rows.has("http"):
            out.append(self.not_run("http"))
            return "\n".join(out)
        sessions = self.setting("SESSIONS")
        out.append(
            f"Floor (no layer, /a): {fmt_int(self.floor('hot'))} req/s with one fixed cookie, "
            f"{fmt_int(self.floor('rotated'))} req/s with {sessions} rotated cookies.")
        out.append("")
        for mode, title in (("hot", "One hot session"),
                            ("rotated", f"{sessions} sessions, rotated round-robin")):
            out.append(f"### {title}")
            out.append("")
            rows = []
            for lib in ("none", "engine", "tower", "axum_session"):
                for route in ("a", "d", "e"):
                    r = self.rows.get("http", lib, "memory", route, mode)
                    if r:
                        rows.append(self.load_cells(LIB_NAMES[lib], route, r, self.floor(mode)))
            out.append(table(self.LOAD_HEADER, self.LOAD_ALIGN, rows))
            out.append("")
        out.append(
            "/a: session untouched; /d: read the counter; /e: read and increment it. 'counter' "
            "is GET /d on the hot session after the last round (each round runs /a, /e, /d), so "
            "it counts the hot /e runs of all rounds, less the concurrent writes lost (32 "
            "connections on one session: last write wins, in every library); 'sum' adds the "
            "counters of all rotated sessions, to be compared with the rotated /e row's "
            "requests (all rounds, same server).")
        out.append("")
        out.append(self.rounds_note())
        return "\n".join(out)

    LOAD_HEADER = ["library", "route", "req/s", "range", "× floor", "avg latency", "p99",
                   "requests", "failed", "check after the runs"]
    LOAD_ALIGN = ["l", "l", "r", "r", "r", "r", "r", "r", "r", "l"]

    @staticmethod
    def load_cells(name, route, r, floor):
        return [name, f"/{route}", fmt_int(r["rps"]), f"{fmt_int(r['lo'])}–{fmt_int(r['hi'])}",
                fmt_ratio(ratio(r["rps"], floor)), fmt_latency(r["avg"]), fmt_latency(r["p99"]),
                fmt_int(r["requests"]), r["failed"], r["check"]]

    def rounds_note(self):
        rounds = self.setting("ROUNDS")
        return (
            f"req/s, avg latency and p99: the median over the {plural(rounds, 'round')} (of wrk's "
            "average and 99th percentile of each round); range: the lowest and highest req/s of "
            "the rounds; requests and failed (non-2xx answers and socket errors): summed over "
            "the rounds. Each round runs every row once, in table order, before the next round "
            "starts. Each server runs through all rounds as one process (cookies minted and a "
            "1 s warm-up on /a once, before round 1), so the checks are read once, after the "
            "last round, and compare with the summed requests.")

    # -- Redis --

    def redis_section(self):
        out = ["## HTTP throughput, Redis and Redis Cluster, one hot session", ""]
        if not self.rows.has("redis"):
            out.append(self.not_run("redis"))
            return "\n".join(out)
        out.append(
            f"Redis 127.0.0.1:6379, database of `{self.setting('REDIS_URL')}` (the benchmark's "
            "own, emptied before and after). session-engine: its `RedisStore` (key prefix "
            "`bench:`); tower-sessions: 0.14 with tower-sessions-redis-store 0.16 (its newest "
            "Redis store, which implements 0.14's store trait), on a fred client configured as "
            "session-engine's `RedisStore::connect` configures its own. Redis Cluster: three "
            "masters, no replicas, on 127.0.0.1 (scripts/redis-cluster.sh, started and stopped "
            "by the run), session-engine only: its × tower-sessions is left empty, as "
            "tower-sessions has no cluster row. Near cache: session-engine's `RedisStore` (key "
            "prefix `bench-near-cache:`) behind its read cache, `NearCache::redis(store, "
            f"{fmt_int(number(self.setting('NEAR_CACHE_CAPACITY')))})`, which serves a "
            "returning visitor's read from the server's memory and is kept coherent by Redis "
            "client tracking; every write and touch still goes to Redis.")
        out.append("")
        rows = []
        for route in ("d", "e"):
            peer = self.rows.get("redis", "tower", "redis", route, "hot")
            for lib, store, name in (("engine", "redis", "session-engine, Redis"),
                                     ("engine", "redis-near-cache",
                                      "session-engine, Redis, near cache"),
                                     ("tower", "redis", "tower-sessions, Redis"),
                                     ("engine", "redis-cluster",
                                      "session-engine, Redis Cluster (3 masters)")):
                r = self.rows.get("redis", lib, store, route, "hot")
                if r:
                    cells = self.load_cells(name, route, r, self.floor("hot"))
                    # tower-sessions has no cluster row: no ratio across topologies.
                    versus = ("" if store == "redis-cluster"
                              else fmt_ratio(ratio(r["rps"], peer and peer["rps"])))
                    rows.append(cells[:5] + [versus] + cells[5:])
        header = self.LOAD_HEADER[:5] + ["× tower-sessions"] + self.LOAD_HEADER[5:]
        out.append(table(header, self.LOAD_ALIGN[:5] + ["r"] + self.LOAD_ALIGN[5:], rows))
        out.append("")
        note = self.parts.get("redis", {}).get("note")
        if note:
            out.append(f"Note: {note}.")
            out.append("")
        out.append(
            "× floor: against the no-layer server's /a with one fixed cookie (the http part). "
            "'counter' is GET /d on the hot session after the last round (each round runs /e, "
            "then /d).")
        out.append("")
        out.append(self.rounds_note())
        return "\n".join(out)

    # -- PostgreSQL and SQLite --

    def sql_section(self):
        sessions = self.setting("SESSIONS")
        out = [f"## HTTP throughput, PostgreSQL and SQLite, {sessions} sessions rotated", ""]
        if not self.rows.has("sql"):
            out.append(self.not_run("sql"))
            return "\n".join(out)
        out.append(
            f"PostgreSQL {self.meta.get('postgres') or '?'} at `{self.setting('POSTGRES_URL')}`, "
            "a table per library created for the run and dropped at its end; SQLite: a "
            "temporary file per library. session-engine: `PostgresStore::connect` and "
            "`SqliteStore::open` (then `migrate`), defaults. tower-sessions: 0.14 with "
            "tower-sessions-sqlx-store 0.15 (its newest, which implements 0.14's store trait; "
            "built in bench/sqlx-peer/, on sqlx 0.8), layer defaults, on pools set up as "
            "session-engine's constructors set up theirs (PostgreSQL: 16 connections; SQLite: 4 "
            "connections, WAL, synchronous NORMAL, 5 s busy timeout), so that the rows compare "
            f"the libraries, not the pools. wrk rotates over {sessions} sessions minted with "
            "GET /new. Near cache: session-engine's `PostgresStore` behind its read cache, "
            "`NearCache::postgres(store, "
            f"{fmt_int(number(self.setting('NEAR_CACHE_CAPACITY')))})`, on a table of its own "
            "(the cache's triggers notify every change of their table, through "
            "`LISTEN`/`NOTIFY`); every write and touch still goes to PostgreSQL.")
        out.append("")
        rows = []
        for store, store_name in (("postgres", "PostgreSQL"), ("sqlite", "SQLite")):
            for route in ("d", "e"):
                peer = self.rows.get("sql", "tower", store, route, "rotated")
                for lib, row_store, name in (
                        ("engine", store, f"session-engine, {store_name}"),
                        ("engine", f"{store}-near-cache",
                         f"session-engine, {store_name}, near cache"),
                        ("tower", store, f"tower-sessions, {store_name}")):
                    r = self.rows.get("sql", lib, row_store, route, "rotated")
                    if r:
                        cells = self.load_cells(name, route, r, self.floor("rotated"))
                        rows.append(cells[:5]
                                    + [fmt_ratio(ratio(r["rps"], peer and peer["rps"]))]
                                    + cells[5:])
        header = self.LOAD_HEADER[:5] + ["× tower-sessions"] + self.LOAD_HEADER[5:]
        out.append(table(header, self.LOAD_ALIGN[:5] + ["r"] + self.LOAD_ALIGN[5:], rows))
        out.append("")
        note = self.parts.get("sql", {}).get("note")
        if note:
            out.append(f"Note: {note}.")
            out.append("")
        out.append(
            "× floor: against the no-layer server's /a with rotated cookies (the http part). "
            "'sum' adds the counters of the rotated sessions after the last round (each round "
            "runs /e, then /d), to be compared with the /e row's requests. session-engine's d "
            "does not write (its default touch interval is min(60 s, duration / 10)); "
            "tower-sessions' d does not write either.")
        out.append("")
        out.append(self.rounds_note())
        return "\n".join(out)

    # -- growth --

    def growth_section(self):
        out = ["## Growth: /d and /e with many live sessions", ""]
        if not self.rows.has("growth"):
            out.append(self.not_run("growth"))
            return "\n".join(out)
        sample = self.setting("GROWTH_SAMPLE")
        out.append(
            "Each server (bench_server --seed) creates its sessions itself, in process, each with "
            "a real GET /new through its own layer, up to each level in turn; the levels grow in "
            f"one process. wrk rotates round-robin over a uniform random sample of {sample} of "
            "all the live sessions at that level (reservoir sampling over every session the "
            "server created, drawn anew at each level), so that most requests hit sessions that "
            "were not touched recently. Redis: session-engine in the database of "
            f"`{self.setting('REDIS_URL')}`, tower-sessions (0.14 + tower-sessions-redis-store "
            f"0.16) in `{self.setting('REDIS_PEER_URL')}`, so that each database holds one "
            "library's sessions; 'live' is the database's DBSIZE. Memory: 'live' is the number "
            "of sessions created (none expires during the run).")
        out.append("")
        stores = []
        for r in self.rows.rows:
            if r["part"] == "growth" and r["store"] not in stores:
                stores.append(r["store"])
        levels = []
        for r in self.rows.rows:
            if r["part"] == "growth" and r["level"] not in levels:
                levels.append(r["level"])
        for store in stores:
            out.append(f"### {'Memory stores' if store == 'memory' else 'Redis'}: wrk rotates over "
                       f"a uniform random sample of {sample} of the live sessions")
            out.append("")
            rows = []
            for level in levels:
                for route in ("d", "e"):
                    peer = self.rows.get("growth", "tower", store, route, "rotated", level)
                    for lib in ("engine", "tower"):
                        r = self.rows.get("growth", lib, store, route, "rotated", level)
                        if not r:
                            continue
                        seed = next((s for s in self.seeds if (s["store"], s["lib"], s["level"])
                                     == (store, lib, level)), {})
                        rows.append([
                            fmt_int(number(level)), fmt_int(number(seed.get("live"))),
                            LIB_NAMES[lib], f"/{route}", fmt_int(r["rps"]),
                            f"{fmt_int(r['lo'])}–{fmt_int(r['hi'])}",
                            fmt_ratio(ratio(r["rps"], peer and peer["rps"]))
                            if lib == "engine" else "",
                            fmt_latency(r["p99"]), fmt_latency(r["avg"]), r["failed"],
                            f"{seed.get('seconds', '?')} s",
                        ])
            out.append(table(
                ["sessions", "live", "library", "route", "req/s", "range", "× tower-sessions",
                 "p99", "avg latency", "failed", "seeding this level"],
                ["r", "r", "l", "l", "r", "r", "r", "r", "r", "r", "r"], rows))
            out.append("")
        out.append(
            "req/s, p99 and avg latency: medians over the rounds, as in the other tables; "
            "seeding: how long the server took to create the sessions added at that level. "
            "No target: the rows show how each library holds up as the store grows.")
        return "\n".join(out)

    # -- memory --

    def memory_section(self):
        out = ["## Memory per session", ""]
        if not self.memory:
            out.append(self.not_run("memory"))
            return "\n".join(out)
        count = fmt_int(number(self.memory[0].get("sessions")))
        out.append(
            f"RSS growth (VmRSS) while {count} sessions holding {{\"visits\": 0}} are created "
            "through each library's layer (GET /new via `Router::oneshot`), after 1,000 "
            "warm-up sessions (which the store also holds); bench/src/bin/session_memory.rs, one "
            "process per library, the system allocator (glibc).")
        out.append("")
        rows = []
        for r in self.memory:
            before, after = number(r.get("rss_before")), number(r.get("rss_after"))
            store = ("session-engine MemoryStore" if r.get("lib") == "engine"
                     else "tower-sessions MemoryStore")
            rows.append([LIB_NAMES.get(r.get("lib"), r.get("lib")), store,
                         fmt_int(number(r.get("sessions"))),
                         fmt_mib(after - before if None not in (after, before) else None),
                         r.get("bytes_per_session", "?"), f"{r.get('seconds', '?')} s",
                         fmt_int(number(r.get("stored")))])
        out.append(table(["library", "store", "sessions measured", "RSS growth", "bytes/session",
                          "time", "store holds"], ["l", "l", "r", "r", "r", "r", "r"], rows))
        return "\n".join(out)

    def instructions_section(self):
        out = ["## Instructions per request (callgrind)", ""]
        counts = self.instructions
        if "a" not in counts:
            out.append(self.not_run("instructions"))
            return "\n".join(out)
        requests = fmt_int(number(self.setting("INSTRUCTION_REQUESTS")))
        out.append(
            "bench/src/bin/hot_path.rs under `valgrind --tool=callgrind`: the same axum `Router` "
            "and scenarios as the criterion benches, driven in process on a current-thread "
            "runtime; each count is the instructions of the requests alone (callgrind collecting "
            f"in hot_path's `measure` only) at twice {requests} requests less those at "
            f"{requests}, divided by {requests}, so that what happens once cancels out. Counts "
            "do not depend on the machine's load: run again, they come out the same. valgrind "
            "runs SHA-256 in software, without the CPU's SHA extensions, so the column beside "
            "session-engine's gives what its SHA-256 compressions (two for the cookie's HMAC, "
            "one for the id's hash) account for here; natively, with the SHA extensions, "
            "`perf record` of hot_path d puts the three at about 5 % of the request's time. "
            "session-engine's counts include its metrics, recorded into Prometheus' recorder "
            "(see \"The cost of the metrics\").")
        out.append("")
        floor = counts["a"][0]
        out.append(f"Floor (a, no layer): {fmt_int(floor)} instructions per request.")
        out.append("")
        rows = []
        for letter, name in (("b", "b: layer, session untouched"), ("c", "c: new visitor sets"),
                             ("d", "d: returning visitor reads"),
                             ("e", "e: returning visitor increments")):
            ours, theirs = counts.get(letter), counts.get("t" + letter)
            if ours is None or theirs is None:
                continue
            over, sha, peer = ours[0] - floor, ours[1], theirs[0] - floor
            rows.append([name, fmt_int(over), fmt_int(sha), fmt_int(over - sha), fmt_int(peer),
                         fmt_ratio(ratio(over, peer)), fmt_ratio(ratio(over - sha, peer))])
        out.append(table(["scenario", "session-engine over the floor", "of which SHA-256",
                          "session-engine without SHA-256", "tower-sessions over the floor",
                          "ratio", "ratio without SHA-256"],
                         ["l", "r", "r", "r", "r", "r", "r"], rows))
        return "\n".join(out)

    def metrics_section(self):
        out = ["## The cost of the metrics", ""]
        c = self.criterion
        bare = self.instructions_bare
        in_process = c is not None and c["bare_floor"] is not None
        paired = in_process and any(c["pairs"].values())
        counted = "a" in self.instructions and "a" in bare
        if not in_process and not counted:
            out.append(self.not_run("criterion") if c is None else
                       "Not measured in this run: no rows of the build without metrics.")
            return "\n".join(out)
        out.append(
            "session-engine with its `metrics` feature (the default), every count and latency "
            "going to Prometheus' recorder (metrics-exporter-prometheus, installed as the "
            "observability guide installs it: the store call histogram's buckets, the "
            "metrics described), against the library built without the feature "
            "(`--no-default-features`: no metrics code at all), in the same run. Each build is "
            "measured over its own floor (an axum `Router` without the layer, in the same "
            "program). In process: `cargo bench --bench compare` and again with "
            "`--no-default-features`, one after the other, the recorder's upkeep (which moves "
            "the histogram's samples into its buckets) running every 5 s on a thread of its "
            "own. Instructions: bench/src/bin/hot_path.rs of each build under callgrind, as "
            "above, the upkeep run once after the requests, so that the counts include it.")
        if paired:
            pairs = max(len(p) for p in c["pairs"].values())
            out.append("")
            out.append(
                "Two criterion runs one after the other differ by what else the machine does "
                "meanwhile: the floor itself moves by 5 to 15 % from one run to the next here, "
                "and an overhead of a few hundred ns more so. So session-engine's benches of "
                f"the two builds also ran in pairs ({pairs} in all, the first being the two "
                "runs of the table above), each build right after the other, and the target "
                "is judged on the median of the pairs' ratios.")
        out.append("")
        rows = []
        for group, label in self.SCENARIO_LABELS:
            letter = group[0]
            cells = [label]
            if in_process:
                module = c["module"]
                on = c["overheads"].get((group, "session-engine"))
                off = c["overheads"].get((group, module.WITHOUT_METRICS))
                cells += [fmt_int(on), fmt_int(off), fmt_ratio(ratio(on, off))]
                if paired:
                    each, median = self.pair_ratios(c["pairs"][group])
                    cells += [", ".join(fmt_ratio(r) for r in each), fmt_ratio(median)]
            if counted:
                on = self.instructions.get(letter)
                off = bare.get(letter)
                on = on and on[0] - self.instructions["a"][0]
                off = off and off[0] - bare["a"][0]
                cells += [fmt_int(on), fmt_int(off), fmt_ratio(ratio(on, off))]
            rows.append(cells)
        header = ["scenario"]
        if in_process:
            header += ["ns over the floor, with metrics", "without", "with / without"]
            if paired:
                header += ["with / without, each pair", "median of the pairs"]
        if counted:
            header += ["instructions over the floor, with metrics", "without",
                       "with / without"]
        out.append(table(header, ["l"] + ["r"] * (len(header) - 1), rows))
        out.append("")
        floors = []
        if in_process:
            floors.append(f"in process {fmt_int(c['floor'])} ns with the feature, "
                          f"{fmt_int(c['bare_floor'])} ns without")
        if counted:
            floors.append(f"{fmt_int(self.instructions['a'][0])} instructions with the "
                          f"feature, {fmt_int(bare['a'][0])} without")
        out.append(f"Floors: {'; '.join(floors)}.")
        return "\n".join(out)

    SCENARIO_LABELS = (("b_untouched", "b: layer, session untouched"),
                       ("c_new_visitor", "c: new visitor sets"),
                       ("d_read", "d: returning visitor reads"),
                       ("e_increment", "e: returning visitor increments"))

    STALENESS_STORES = {"redis": "Redis", "postgres": "PostgreSQL"}

    def staleness_section(self):
        out = ["## Staleness of the read cache", ""]
        if not self.staleness:
            out.append(self.not_run("staleness"))
            return "\n".join(out)
        out.append(
            "bench/src/bin/near_cache_staleness.rs: two app instances on one store, each with "
            "a client of its own: A writes, B has the read cache (`NearCache`) in front. Each "
            "trial: B reads the record until a read is served from its memory, A updates it, "
            "and B is watched until the invalidation has arrived and the record is dropped "
            "(a poll that gives its core to the OS each turn; why, under \"The targets "
            "missed\"). "
            "The staleness is the time from A's write acknowledged to the record dropped on B "
            "(0 when it was dropped before the acknowledgement came back to A): how long B may "
            "still serve what A has changed; the second row of each store counts from the "
            f"write sent. Redis: `{self.setting('REDIS_URL')}`, client tracking; PostgreSQL: "
            f"`{self.setting('POSTGRES_URL')}`, a table in a schema of the run's own (dropped at "
            "its end), `LISTEN`/`NOTIFY` fed by the cache's triggers.")
        out.append("")
        rows = []
        for r in self.staleness:
            what = r["what"].replace("->", "→")
            rows.append([self.STALENESS_STORES.get(r["store"], r["store"]), what,
                         fmt_int(number(r["trials"])), fmt_latency(r["p50"]),
                         fmt_latency(r["p90"]), fmt_latency(r["p99"]), fmt_latency(r["p999"]),
                         fmt_latency(r["max"])])
        out.append(table(["store", "from", "trials", "p50", "p90", "p99", "p99.9", "max"],
                         ["l", "l", "r", "r", "r", "r", "r", "r"], rows))
        return "\n".join(out)

    def cleanup_section(self):
        out = ["## Clean-up of a large SQL table", ""]
        if not self.cleanup:
            out.append(self.not_run("cleanup"))
            return "\n".join(out)
        first = self.cleanup[0]
        out.append(
            f"bench/src/bin/cleanup_rate.rs: a table of {fmt_int(number(first.get('rows')))} "
            f"rows made by one `INSERT … SELECT`, {first.get('expired_percent', '?')} % of them "
            "expired, spread evenly through the key order (keys of the stores' own form, in "
            "random order), plus one expired row whose key sorts last; PostgreSQL's table "
            "vacuumed and analyzed, SQLite's WAL checkpointed. Then `cleanup()`, with the "
            "store's defaults (batches of 1,000 rows, a 2 s budget per call), called until "
            "every expired row is gone, so that the walk has gone through the whole table "
            "(first walk); then again, with only the last row expired (second walk: a "
            "clean-up that finds little to do). Each call is one bounded step that goes on "
            "where the previous one stopped; time: the sum of the calls'. PostgreSQL at "
            f"`{self.setting('POSTGRES_URL')}`, a table of its own dropped at the end; SQLite: "
            "a temporary file.")
        out.append("")
        rows = []
        for r in self.cleanup:
            store = {"postgres": "PostgreSQL", "sqlite": "SQLite"}.get(r.get("store"),
                                                                      r.get("store"))
            walk = ("first: removes the expired rows" if r.get("walk") == "first"
                    else "second: one row expired")
            rows.append([store, walk, fmt_int(number(r.get("rows"))),
                         fmt_int(number(r.get("removed"))), r.get("calls", "?"),
                         f"{number(r.get('seconds')) or 0:.2f} s",
                         fmt_int(number(r.get("walked_per_s"))),
                         fmt_int(number(r.get("removed_per_s"))),
                         f"{r.get('fill_s', '?')} s"])
        out.append(table(["store", "walk", "rows walked", "removed", "calls", "time",
                          "rows walked/s", "rows removed/s", "making the table"],
                         ["l", "l", "r", "r", "r", "r", "r", "r", "r"], rows))
        note = self.parts.get("cleanup", {}).get("note")
        if note:
            out.append("")
            out.append(f"Note: {note}.")
        return "\n".join(out)

    def expiry_section(self):
        out = ["## Memory after expiry", ""]
        if not self.expiry:
            out.append(self.not_run("expiry"))
            return "\n".join(out)
        e = self.expiry[0]
        out.append(
            f"bench/src/bin/session_memory.rs, expiry mode: {fmt_int(number(e.get('sessions')))} "
            f"sessions lasting {e.get('duration_s', '?')} s are created through the layer (after "
            "1,000 warm-up sessions of the same duration); the RSS is read before (the start) and "
            "after; nothing runs until every session has expired; then light ordinary traffic "
            f"through the same layer, {e.get('rate', '?')} requests/s (new visitors until 100 "
            "sessions exist, then these 100 in turn, reading and incrementing), for at most "
            f"{e.get('traffic_limit_s', '?')} s, stopping as soon as the RSS is within 10 % of "
            "the start. No clean-up is called: session-engine's MemoryStore sweeps a few records "
            "on each call; tower-sessions' MemoryStore only skips expired records on a read. "
            "The last row runs session-engine again with glibc's mmap threshold fixed "
            "(`GLIBC_TUNABLES=glibc.malloc.mmap_threshold=N`): by default glibc raises the "
            "threshold each time a large block is freed, after which blocks of that size come "
            "from its heap, and what they leave free there stays in the process.")
        out.append("")
        rows = []
        for r in self.expiry:
            start, full, end = (number(r.get(k)) for k in ("rss_start", "rss_full", "rss_end"))
            given_back = None
            if None not in (start, full, end) and full > start:
                given_back = f"{100 * (full - end) / (full - start):.0f} %"
            if r.get("recovered") == "yes":
                verdict = (f"yes, after {r.get('recovered_after_s')} s and "
                           f"{fmt_int(number(r.get('recovered_after_requests')))} requests")
            else:
                verdict = (f"no, in {r.get('traffic_s')} s and "
                           f"{fmt_int(number(r.get('requests')))} requests")
            rows.append([expiry_label(r), fmt_mib(start),
                         fmt_mib(full), fmt_mib(number(r.get("rss_expired"))), fmt_mib(end),
                         given_back or "n/a", verdict,
                         fmt_int(number(r.get("stored_end")))
                         if r.get("stored_end") != "n/a" else "n/a"])
        out.append(table(["library", "RSS at the start", "with all sessions",
                          "all expired, before traffic", "at the end", "growth given back",
                          "within 10 % of the start", "store holds at the end"],
                         ["l", "r", "r", "r", "r", "r", "l", "r"], rows))
        return "\n".join(out)

    # -- targets --

    def targets(self):
        rows = []
        v2, v3, production = "Speed v2", "Speed v3", "Run it in production"
        ranges = "within the rounds' range"

        def verdict(value, target, higher, optimistic=None, noise=ranges):
            if value is None:
                return "n/a"
            if value >= target if higher else value <= target:
                return "yes"
            if optimistic is not None and (optimistic >= target if higher
                                           else optimistic <= target):
                return f"no ({noise})"
            return "no"

        def rps(r):
            return r and r["rps"]

        def load_row(measure, ours, theirs, name, target, issue):
            """A load row against another: its req/s, the ratio of the medians, and met within
            the range when the best round of ours against the worst of theirs meets it."""
            value = ratio(rps(ours), rps(theirs))
            optimistic = ratio(ours and ours["hi"], theirs and theirs["lo"])
            rows.append([measure, fmt_int(rps(ours)),
                         f"{name} {fmt_int(rps(theirs))}" if theirs else "n/a",
                         fmt_ratio(value), f"≥ {target} × {name}",
                         verdict(value, target, True, optimistic), issue])

        # in process
        c = self.criterion
        for group, label in self.SCENARIO_LABELS:
            target = {"b_untouched": 0.4, "d_read": 0.75, "e_increment": 0.75}.get(group)
            if target is None:
                continue
            ours = theirs = None
            if c:
                ours = c["overheads"].get((group, "session-engine"))
                theirs = c["overheads"].get((group, "tower-sessions"))
            value = ratio(ours, theirs)
            rows.append([f"in process, overhead over the floor, {label}",
                         "n/a" if ours is None else f"+{fmt_int(ours)} ns",
                         "n/a" if theirs is None else f"tower-sessions +{fmt_int(theirs)} ns",
                         fmt_ratio(value), f"ours / tower-sessions ≤ {target}",
                         verdict(value, target, higher=False), v3])

        # the cost of the metrics
        bare = self.instructions_bare
        counted = "a" in self.instructions and "a" in bare
        for group, label in self.SCENARIO_LABELS:
            on = off = optimistic = None
            each, median = [], None
            if c and c["bare_floor"] is not None:
                without = c["module"].WITHOUT_METRICS
                on = c["overheads"].get((group, "session-engine"))
                off = c["overheads"].get((group, without))
                low = c["extremes"].get((group, "session-engine"))
                high = c["extremes"].get((group, without))
                optimistic = ratio(low and low[0], high and high[1])
                each, median = self.pair_ratios(c["pairs"][group])
            value = ratio(on, off)
            if median is not None:
                # Judged on the pairs: the median of their ratios, met within the pairs'
                # range when the best of them meets it.
                rows.append([f"metrics on, in process, overhead over the floor, {label}, "
                             f"median of {len(each)} pairs",
                             "n/a" if on is None else f"+{fmt_int(on)} ns (first pair)",
                             "n/a" if off is None else
                             f"without the feature +{fmt_int(off)} ns (first pair)",
                             fmt_ratio(median), "with / without ≤ 1.05",
                             verdict(median, 1.05, False, min(each), "within the pairs' range"),
                             production])
                continue
            rows.append([f"metrics on, in process, overhead over the floor, {label}",
                         "n/a" if on is None else f"+{fmt_int(on)} ns",
                         "n/a" if off is None else f"without the feature +{fmt_int(off)} ns",
                         fmt_ratio(value), "with / without ≤ 1.05",
                         verdict(value, 1.05, False, optimistic,
                                 "within criterion's confidence intervals"), production])
        for group, label in self.SCENARIO_LABELS:
            on = off = None
            if counted and group[0] in self.instructions and group[0] in bare:
                on = self.instructions[group[0]][0] - self.instructions["a"][0]
                off = bare[group[0]][0] - bare["a"][0]
            value = ratio(on, off)
            rows.append([f"metrics on, instructions over the floor, {label}",
                         "n/a" if on is None else f"+{fmt_int(on)}",
                         "n/a" if off is None else f"without the feature +{fmt_int(off)}",
                         fmt_ratio(value), "with / without ≤ 1.05",
                         verdict(value, 1.05, higher=False), production])

        # HTTP, memory stores
        sessions = self.setting("SESSIONS")
        for mode, mode_name in (("hot", "one hot session"),
                                ("rotated", f"{sessions} rotated sessions")):
            floor = self.floor(mode)
            floor_row = self.rows.get("http", "none", "memory", "a", mode)
            for route, target in (("a", None), ("d", 0.85), ("e", 0.75)):
                ours = self.rows.get("http", "engine", "memory", route, mode)
                theirs = self.rows.get("http", "tower", "memory", route, mode)
                ours_x = ratio(rps(ours), floor)
                theirs_x = ratio(rps(theirs), floor)
                theirs_cell = f"tower-sessions {fmt_ratio(theirs_x)}"
                ahead = ours is not None and theirs is not None and ours["rps"] > theirs["rps"]
                ahead_opt = (ours is not None and theirs is not None
                             and ours["hi"] > theirs["lo"])
                if target is None:
                    value = ratio(rps(ours), rps(theirs))
                    met = "n/a" if value is None else (
                        "yes" if ahead else f"no ({ranges})" if ahead_opt else "no")
                    rows.append([f"HTTP, {mode_name}, /a (layer untouched), × floor",
                                 fmt_ratio(ours_x), theirs_cell, fmt_ratio(value),
                                 "ahead of tower-sessions", met, v2])
                    continue
                optimistic = ratio(ours and ours["hi"], floor_row and floor_row["lo"])
                within = f" ({ranges})"
                reasons = []
                if ours_x is not None and ours_x < target:
                    reasons.append(f"below {target} × floor"
                                   + (within if optimistic is not None and optimistic >= target
                                      else ""))
                if theirs is not None and not ahead:
                    reasons.append("behind tower-sessions" + (within if ahead_opt else ""))
                if ours_x is None:
                    met = "n/a"
                else:
                    met = "no: " + "; ".join(reasons) if reasons else "yes"
                rows.append([f"HTTP, {mode_name}, /{route}, × floor", fmt_ratio(ours_x),
                             theirs_cell, fmt_ratio(ratio(rps(ours), rps(theirs))),
                             f"≥ {target} × floor and ahead of tower-sessions", met, v2])

        # memory
        engine_mem = next((r for r in self.memory if r.get("lib") == "engine"), None)
        tower_mem = next((r for r in self.memory if r.get("lib") == "tower"), None)
        bps = number(engine_mem.get("bytes_per_session")) if engine_mem else None
        tbps = number(tower_mem.get("bytes_per_session")) if tower_mem else None
        at = fmt_int(number(engine_mem.get("sessions"))) if engine_mem else "1,000,000"
        rows.append([f"memory store, bytes per session at {at} sessions",
                     "n/a" if bps is None else f"{bps:.1f}",
                     "n/a" if tbps is None else f"tower-sessions {tbps:.1f}",
                     fmt_ratio(ratio(bps, tbps)), "≤ 200 B", verdict(bps, 200, higher=False),
                     v2])
        plain = [r for r in self.expiry if "mmap_threshold" not in r]
        tuned = next((r for r in self.expiry if "mmap_threshold" in r), None)
        engine_exp = next((r for r in plain if r.get("lib") == "engine"), None)
        tower_exp = next((r for r in plain if r.get("lib") == "tower"), None)

        def expiry_cell(r):
            if r is None:
                return "n/a"
            return f"{fmt_mib(number(r.get('rss_end')))} (start {fmt_mib(number(r.get('rss_start')))})"

        rows.append(["memory store, RSS after expiry and light traffic, no clean-up call",
                     expiry_cell(engine_exp),
                     f"tower-sessions {expiry_cell(tower_exp)}" if tower_exp else "n/a", "",
                     "within 10 % of the start",
                     "n/a" if engine_exp is None else
                     ("yes" if engine_exp.get("recovered") == "yes" else "no"), v2])
        if tuned is not None:
            rows.append([f"the same, {expiry_label(tuned)}", expiry_cell(tuned), "", "",
                         "within 10 % of the start",
                         "yes" if tuned.get("recovered") == "yes" else "no", v2])

        # Redis
        redis_peer = "tower-sessions-redis-store"
        for route in ("d", "e"):
            load_row(f"Redis, HTTP /{route}, req/s",
                     self.rows.get("redis", "engine", "redis", route, "hot"),
                     self.rows.get("redis", "tower", "redis", route, "hot"), redis_peer, 1.1, v2)
        cached = {route: self.rows.get("redis", "engine", "redis-near-cache", route, "hot")
                  for route in ("d", "e")}
        load_row("Redis with the near cache, HTTP /d, req/s", cached["d"],
                 self.rows.get("redis", "tower", "redis", "d", "hot"), redis_peer, 1.5, v3)
        load_row("Redis with the near cache, HTTP /d, req/s, against the memory store",
                 cached["d"], self.rows.get("http", "engine", "memory", "d", "hot"),
                 "session-engine's memory store (one hot session)", 0.8, v3)
        load_row("Redis with the near cache, HTTP /e, req/s", cached["e"],
                 self.rows.get("redis", "tower", "redis", "e", "hot"), redis_peer, 1.1, v3)

        # PostgreSQL, SQLite
        sql_peer = "tower-sessions-sqlx-store"
        for store, store_name in (("postgres", "PostgreSQL"), ("sqlite", "SQLite")):
            for route, issue in (("d", v2), ("e", f"{v2}, {v3}")):
                load_row(f"{store_name}, HTTP /{route}, req/s",
                         self.rows.get("sql", "engine", store, route, "rotated"),
                         self.rows.get("sql", "tower", store, route, "rotated"), sql_peer, 1.0,
                         issue)
            if store == "postgres":
                for route, target in (("d", 2.0), ("e", 1.1)):
                    load_row(f"PostgreSQL with the near cache, HTTP /{route}, req/s",
                             self.rows.get("sql", "engine", "postgres-near-cache", route,
                                           "rotated"),
                             self.rows.get("sql", "tower", "postgres", route, "rotated"),
                             sql_peer, target, v3)

        # the read cache's staleness
        for r in self.staleness:
            if not r["what"].startswith("write acknowledged"):
                continue
            p99_ms = r["p99"] / 1e3
            rows.append([f"near cache staleness, "
                         f"{self.STALENESS_STORES.get(r['store'], r['store'])}, p99 from the "
                         "write acknowledged", fmt_latency(r["p99"]), "", "", "≤ 2 ms",
                         verdict(p99_ms, 2.0, higher=False), v3])
        if not self.staleness:
            rows.append(["near cache staleness, p99", "n/a", "", "", "≤ 2 ms", "n/a", v3])
        rows.append(["growth to 1,000,000 live sessions (memory, Redis)", "see the growth table",
                     "", "", "no target: the rows", "", ""])
        rows.append(["clean-up of a large table (PostgreSQL, SQLite), rows walked/s",
                     "see the clean-up table", "", "", "no target: the rows", "", ""])
        return table(["measure", "session-engine", "compared with", "ratio", "target", "met",
                      "issue"], ["l", "r", "r", "r", "l", "l", "l"], rows)

    def targets_section(self):
        return "\n".join([
            "## Targets", "",
            "Computed from the numbers of this run (issues \"Speed v2\", \"Speed v3\" and \"Run "
            "it in production\", named in each row). Every comparison is with the named peer or "
            "build measured in the same run, on default settings. \"within the rounds' range\": "
            "not met by the medians, but met by the best round against the worst, so within "
            "this machine's noise; \"within criterion's confidence intervals\": not met by the "
            "means, but met by the ends of criterion's intervals most favourable to it.", "",
            self.targets()])

    def parts_section(self):
        rows = [[p["part"], p["status"], f"{p['seconds']} s", p["note"]]
                for p in self.parts.values()]
        return "\n".join(["## Parts of this run", "",
                          table(["part", "status", "time", "note"], ["l", "l", "r", "l"], rows)])

    def tables(self):
        return "\n\n".join([self.criterion_section(), self.http_section(), self.redis_section(),
                            self.sql_section(), self.staleness_section(),
                            self.growth_section(), self.memory_section(),
                            self.expiry_section(), self.instructions_section(),
                            self.metrics_section(), self.cleanup_section()])

    def results(self):
        return "\n\n".join([
            "# session-engine vs peers: benchmark results",
            self.run_text(),
            self.machine_text(),
            self.tables(),
            self.targets_section(),
            self.parts_section(),
        ]) + "\n"

    def benchmarks(self, template):
        text = template
        for key, value in (("{{run}}", self.run_text()), ("{{machine}}", self.machine_text()),
                           ("{{tables}}", self.tables()), ("{{targets}}", self.targets_section()),
                           ("{{parts}}", self.parts_section())):
            text = text.replace(key, value)
        return text


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    data = Path(argv[0])
    options = {}
    rest = argv[1:]
    while rest:
        if rest[0] in ("--results", "--benchmarks", "--template") and len(rest) > 1:
            options[rest[0]] = rest[1]
            rest = rest[2:]
        else:
            print(__doc__.strip(), file=sys.stderr)
            return 2
    report = Report(data)
    results = report.results()
    if "--results" in options:
        Path(options["--results"]).write_text(results)
    else:
        sys.stdout.write(results)
    if "--benchmarks" in options:
        template = Path(options.get("--template", HERE / "BENCHMARKS.md.in")).read_text()
        Path(options["--benchmarks"]).write_text(report.benchmarks(template))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
