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

        def fresh(group, bench):
            path = root / group / bench / "new" / "estimates.json"
            if not path.exists() or path.stat().st_mtime < started:
                return None
            return module.estimate(root, group, bench, "mean")

        floor = fresh(*module.FLOOR)
        if floor is None:
            return None
        overheads = {}
        for group, label in module.SCENARIOS:
            for library in module.LIBRARIES:
                value = fresh(group, library)
                overheads[(group, library)] = None if value is None else value - floor
        return {"floor": floor, "overheads": overheads, "module": module}

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
            "tower-sessions has no cluster row.")
        out.append("")
        rows = []
        for route in ("d", "e"):
            peer = self.rows.get("redis", "tower", "redis", route, "hot")
            for lib, store, name in (("engine", "redis", "session-engine, Redis"),
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
            "GET /new.")
        out.append("")
        rows = []
        for store, store_name in (("postgres", "PostgreSQL"), ("sqlite", "SQLite")):
            for route in ("d", "e"):
                peer = self.rows.get("sql", "tower", store, route, "rotated")
                for lib in ("engine", "tower"):
                    r = self.rows.get("sql", lib, store, route, "rotated")
                    if r:
                        cells = self.load_cells(f"{LIB_NAMES[lib]}, {store_name}", route, r,
                                                self.floor("rotated"))
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
            f"runtime; each count is the program's instructions at twice {requests} requests "
            f"less those at {requests}, divided by {requests}, so start-up cancels out. Counts "
            "do not depend on the machine's load: run again, they come out the same. valgrind "
            "runs SHA-256 in software, without the CPU's SHA extensions, so the column beside "
            "session-engine's gives what its SHA-256 compressions (two for the cookie's HMAC, "
            "one for the id's hash) account for here; natively, with the SHA extensions, "
            "`perf record` of hot_path d puts the three at about 5 % of the request's time.")
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

        def verdict(value, target, higher, optimistic=None, extra=True):
            if value is None:
                return "n/a"
            met = (value >= target if higher else value <= target) and extra
            if met:
                return "yes"
            if optimistic is not None and (optimistic >= target if higher else optimistic <= target) and extra:
                return "no (within the rounds' range)"
            return "no"

        # in-process
        c = self.criterion
        for group, label, target in (("b_untouched", "b: layer, session untouched", 0.25),
                                     ("c_new_visitor", "c: new visitor sets", 0.5),
                                     ("d_read", "d: returning visitor reads", 0.5),
                                     ("e_increment", "e: returning visitor increments", 0.5)):
            ours = theirs = None
            if c:
                ours = c["overheads"].get((group, "session-engine"))
                theirs = c["overheads"].get((group, "tower-sessions"))
            value = ratio(ours, theirs)
            rows.append([f"in process, overhead over the floor, {label}",
                         f"+{fmt_int(ours)} ns" if ours is not None else "n/a",
                         f"+{fmt_int(theirs)} ns" if theirs is not None else "n/a",
                         fmt_ratio(value), f"ours / tower-sessions ≤ {target}",
                         verdict(value, target, higher=False)])

        # HTTP, memory stores
        sessions = self.setting("SESSIONS")
        for mode, mode_name in (("hot", "one hot session"),
                                ("rotated", f"{sessions} rotated sessions")):
            floor = self.floor(mode)
            floor_row = self.rows.get("http", "none", "memory", "a", mode)
            for route, target in (("a", None), ("d", 0.85), ("e", 0.75)):
                ours = self.rows.get("http", "engine", "memory", route, mode)
                theirs = self.rows.get("http", "tower", "memory", route, mode)
                ours_x = ratio(ours and ours["rps"], floor)
                theirs_x = ratio(theirs and theirs["rps"], floor)
                ahead = ours is not None and theirs is not None and ours["rps"] > theirs["rps"]
                ahead_opt = (ours is not None and theirs is not None
                             and ours["hi"] > theirs["lo"])
                if target is None:
                    value = ratio(ours and ours["rps"], theirs and theirs["rps"])
                    met = "n/a" if value is None else (
                        "yes" if ahead else "no (within the rounds' range)" if ahead_opt else "no")
                    rows.append([f"HTTP, {mode_name}, /a (layer untouched), × floor",
                                 fmt_ratio(ours_x), fmt_ratio(theirs_x), fmt_ratio(value),
                                 "ahead of tower-sessions", met])
                    continue
                optimistic = ratio(ours and ours["hi"], floor_row and floor_row["lo"])
                within = " (within the rounds' range)"
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
                             fmt_ratio(theirs_x),
                             fmt_ratio(ratio(ours and ours["rps"], theirs and theirs["rps"])),
                             f"≥ {target} × floor and ahead of tower-sessions", met])

        # memory
        engine_mem = next((r for r in self.memory if r.get("lib") == "engine"), None)
        tower_mem = next((r for r in self.memory if r.get("lib") == "tower"), None)
        bps = number(engine_mem.get("bytes_per_session")) if engine_mem else None
        tbps = number(tower_mem.get("bytes_per_session")) if tower_mem else None
        at = fmt_int(number(engine_mem.get("sessions"))) if engine_mem else "1,000,000"
        rows.append([f"memory store, bytes per session at {at} sessions",
                     "n/a" if bps is None else f"{bps:.1f}",
                     "n/a" if tbps is None else f"{tbps:.1f}", fmt_ratio(ratio(bps, tbps)),
                     "≤ 200 B", verdict(bps, 200, higher=False)])
        plain = [r for r in self.expiry if "mmap_threshold" not in r]
        tuned = next((r for r in self.expiry if "mmap_threshold" in r), None)
        engine_exp = next((r for r in plain if r.get("lib") == "engine"), None)
        tower_exp = next((r for r in plain if r.get("lib") == "tower"), None)

        def expiry_cell(r):
            if r is None:
                return "n/a"
            return f"{fmt_mib(number(r.get('rss_end')))} (start {fmt_mib(number(r.get('rss_start')))})"

        rows.append(["memory store, RSS after expiry and light traffic, no clean-up call",
                     expiry_cell(engine_exp), expiry_cell(tower_exp), "",
                     "within 10 % of the start",
                     "n/a" if engine_exp is None else
                     ("yes" if engine_exp.get("recovered") == "yes" else "no")])
        if tuned is not None:
            rows.append([f"the same, {expiry_label(tuned)}", expiry_cell(tuned), "", "",
                         "within 10 % of the start",
                         "yes" if tuned.get("recovered") == "yes" else "no"])

        # Redis, PostgreSQL, SQLite
        for part, store, store_name, mode, target, peer_name in (
                ("redis", "redis", "Redis", "hot", 1.1, "tower-sessions-redis-store"),
                ("sql", "postgres", "PostgreSQL", "rotated", 1.0, "tower-sessions-sqlx-store"),
                ("sql", "sqlite", "SQLite", "rotated", 1.0, "tower-sessions-sqlx-store")):
            for route in ("d", "e"):
                ours = self.rows.get(part, "engine", store, route, mode)
                theirs = self.rows.get(part, "tower", store, route, mode)
                value = ratio(ours and ours["rps"], theirs and theirs["rps"])
                optimistic = ratio(ours and ours["hi"], theirs and theirs["lo"])
                rows.append([f"{store_name}, HTTP /{route}, req/s",
                             fmt_int(ours and ours["rps"]), fmt_int(theirs and theirs["rps"]),
                             fmt_ratio(value), f"≥ {target} × {peer_name}",
                             verdict(value, target, True, optimistic)])
        rows.append(["growth to 1,000,000 live sessions (memory, Redis)", "see the growth table",
                     "", "", "no target: the rows", ""])
        rows.append(["clean-up of a large table (PostgreSQL, SQLite), rows walked/s",
                     "see the clean-up table", "", "", "no target: the rows", ""])
        return table(["measure", "session-engine", "tower-sessions", "ratio", "target", "met"],
                     ["l", "r", "r", "r", "l", "l"], rows)

    def targets_section(self):
        return "\n".join([
            "## Targets", "",
            "Computed from the numbers of this run (issue \"Speed v2\"). Every comparison is with "
            "the named peer measured in the same run, both on default settings. \"within the "
            "rounds' range\": not met by the medians, but met by the best round against the "
            "worst, so within this machine's noise.", "",
            self.targets()])

    def parts_section(self):
        rows = [[p["part"], p["status"], f"{p['seconds']} s", p["note"]]
                for p in self.parts.values()]
        return "\n".join(["## Parts of this run", "",
                          table(["part", "status", "time", "note"], ["l", "l", "r", "l"], rows)])

    def tables(self):
        return "\n\n".join([self.criterion_section(), self.http_section(), self.redis_section(),
                            self.sql_section(), self.growth_section(), self.memory_section(),
                            self.expiry_section(), self.instructions_section(),
                            self.cleanup_section()])

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
