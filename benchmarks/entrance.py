"""Entrance latency with the real year loaded: replay every basket of The Complete Journey, fit
the suggestion model on it (the nightly job), then time ``enter`` for cards drawn at random
(p50 / p99).

    python benchmarks/entrance.py [--n 5000] [--json PATH] [--no-fit]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import fit_model, on, write_json  # noqa: E402
from benchmarks.completejourney import load, open_home, request  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--limit-households", type=int, default=0)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--no-fit", action="store_true", help="time the built-in engine (no model in the home)")
    args = ap.parse_args(argv)
    baskets, departments = load()
    if args.limit_households:
        keep = set(sorted({b.household for b in baskets})[: args.limit_households])
        baskets = [b for b in baskets if b.household in keep]
    households = sorted({b.household for b in baskets})
    rng = random.Random(5)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        svc, cards = open_home(home, departments, households)
        for b in baskets:
            on(svc, b.at).checkout(request(cards[b.household], b))
        svc.refresh_stats()
        fit = None
        if not args.no_fit:
            svc.store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            fit = fit_model(home, baskets[-1].at)
            print(f"fit on the year: {fit['wall_s']} s, peak RSS {fit['peak_rss_mb']} MB")
        day = baskets[-1].at + timedelta(days=1)
        codes = list(cards.values())
        lat = []
        for i in range(args.n):
            code = rng.choice(codes)
            t = time.perf_counter()
            on(svc, day + timedelta(days=7 * (i // len(codes)))).enter({"card": code})
            lat.append(time.perf_counter() - t)
        svc.close()
    lat.sort()
    result = {
        "benchmark": "entrance",
        "baskets_loaded": len(baskets),
        "cards": len(households),
        "enters": len(lat),
        "enter_p50_ms": round(statistics.median(lat) * 1000, 3),
        "enter_p99_ms": round(lat[int(len(lat) * 0.99) - 1] * 1000, 3),
        "model": None if fit is None else {k: fit[k] for k in ("fingerprint", "habit_trees", "discovery_trees")},
        "fit": None if fit is None else {"wall_s": fit["wall_s"], "peak_rss_mb": fit["peak_rss_mb"],
                                         "cards": fit["fitted"]["cards"], "origins": fit["fitted"]["origins"]},
    }  # fmt: skip
    print(f"enter with {len(baskets)} baskets loaded: p50 {result['enter_p50_ms']} ms, p99 {result['enter_p99_ms']} ms")
    return write_json(args.json, result)


if __name__ == "__main__":
    main()
