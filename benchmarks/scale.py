"""Growth: checkout and entrance latency at 10k, 100k and 1M cards; database size per card.

Synthetic cards are made with the real key ring (tokens) and given a plausible history
(visits on 4 days of the last 8 weeks, 3 categories each from a Zipf-like mix) by bulk
inserts, so that a million cards take minutes rather than hours; the measured
operations then go through the library like any terminal's.

    python benchmarks/scale.py [--sizes 10000,100000,1000000] [--ops 2000] [--json PATH]
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from anoncard import Service, init_home  # noqa: E402
from anoncard.cards import generate  # noqa: E402
from anoncard.programme import Programme  # noqa: E402
from benchmarks.common import fit_model, on, write_json  # noqa: E402

# 40 categories the default programme declares (none of them sensitive), by falling popularity
CATEGORIES = sorted(c.name for c in Programme.default().vocabulary.categories.values() if not c.sensitive)[:40]
WEIGHTS = [1 / (i + 1) for i in range(40)]
TODAY = date(2026, 11, 2)


def grow(home: Path, svc: Service, rng: random.Random, n: int, keep: list[str]) -> None:
    """Add ``n`` cards with history; remember a sample of their codes for the measurements."""
    primary = svc.ring.primary
    secrets_ = [generate() for _ in range(n)]
    keep += [s.code for s in rng.sample(secrets_, min(len(secrets_), 5000))]
    with svc.store.transaction():
        svc.store.add_cards([primary.token(s) for s in secrets_], primary.version)
    # fixture: bulk history straight into the tables the store defines (benchmark only)
    conn = sqlite3.connect(home / "anoncard.db")
    conn.execute("PRAGMA journal_mode=WAL")
    (last_id,) = conn.execute("SELECT max(id) FROM cards").fetchone()
    first_id = last_id - n + 1

    def rows():
        for card in range(first_id, last_id + 1):
            for day in rng.sample(range(56), 4):
                d = (TODAY - timedelta(days=day)).isoformat()
                for c in set(rng.choices(CATEGORIES, WEIGHTS, k=3)):
                    yield card, d, c, rng.randint(99, 2999), 1

    def visit_rows():
        for card, d in {(r[0], r[1]) for r in conn.execute(
                "SELECT card_id, day FROM history WHERE card_id >= ?", (first_id,))}:  # fmt: skip
            yield card, d, 1, 0

    with conn:
        conn.executemany("INSERT OR IGNORE INTO history VALUES (?, ?, ?, ?, ?)", rows())
    with conn:
        conn.executemany("INSERT OR IGNORE INTO visits VALUES (?, ?, ?, ?)", visit_rows())
    conn.close()


def measure(svc: Service, codes: list[str], ops: int, rng: random.Random, tag: str) -> dict:
    enter, checkout = [], []
    for i in range(ops):
        code = rng.choice(codes)
        t = time.perf_counter()
        on(svc, TODAY).enter({"card": code})
        enter.append(time.perf_counter() - t)
        request = {
            "card": code,
            "txn": f"{tag}-{i}",
            "lines": [{"category": c, "amount": f"{rng.randint(1, 30)}.{rng.randint(0, 99):02d}"}
                      for c in rng.sample(CATEGORIES, 5)],
        }  # fmt: skip
        t = time.perf_counter()
        on(svc, TODAY).checkout(request)
        checkout.append(time.perf_counter() - t)

    def pct(xs: list[float]) -> dict:
        xs = sorted(xs)
        return {
            "p50_ms": round(statistics.median(xs) * 1000, 3),
            "p99_ms": round(xs[int(len(xs) * 0.99) - 1] * 1000, 3),
        }

    return {"enter": pct(enter), "checkout": pct(checkout)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--ops", type=int, default=2000)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--no-fit", action="store_true", help="measure the entrance without a fitted suggestion model")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    rng = random.Random(7)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        init_home(home)
        svc = Service.open(home, synchronous="NORMAL")
        codes: list[str] = []
        have = 0
        for size in sizes:
            t = time.perf_counter()
            grow(home, svc, rng, size - have, codes)
            have = size
            build = time.perf_counter() - t
            t = time.perf_counter()
            svc.refresh_stats()
            stats_s = time.perf_counter() - t
            svc.store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db = (home / "anoncard.db").stat().st_size
            fit = {}
            if not args.no_fit:  # the nightly fit, then the entrance with its model
                report = fit_model(home, datetime.combine(TODAY, clock_time(22)))
                fit = {"fit": {k: report[k] for k in ("wall_s", "peak_rss_mb", "habit_trees", "discovery_trees")}
                       | {"cards": report["fitted"]["cards"], "origins": report["fitted"]["origins"]}}  # fmt: skip
                print(f"  fit: {fit['fit']}")
            row = {"cards": size, "build_s": round(build, 1), "refresh_stats_s": round(stats_s, 1),
                   "db_bytes_per_card": round(db / size), **fit,
                   **measure(svc, codes, args.ops, rng, f"s{size}")}  # fmt: skip
            rows.append(row)
            print(
                f"{size:>9} cards: enter p50 {row['enter']['p50_ms']} ms p99 {row['enter']['p99_ms']} ms; "
                f"checkout p50 {row['checkout']['p50_ms']} ms p99 {row['checkout']['p99_ms']} ms; "
                f"{row['db_bytes_per_card']} bytes/card (built in {build:.0f} s, stats {stats_s:.0f} s)"
            )
        svc.close()
    first, last = rows[0], rows[-1]
    result = {
        "benchmark": "scale",
        "synchronous": "NORMAL",
        "rows": rows,
        "p99_ratio_largest_to_smallest": {
            "enter": round(last["enter"]["p99_ms"] / first["enter"]["p99_ms"], 2),
            "checkout": round(last["checkout"]["p99_ms"] / first["checkout"]["p99_ms"], 2),
        },
    }
    print(f"p99 at {last['cards']} vs {first['cards']} cards: {result['p99_ratio_largest_to_smallest']}")
    return write_json(args.json, result)


if __name__ == "__main__":
    main()
