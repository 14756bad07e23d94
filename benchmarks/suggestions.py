"""Entrance suggestions measured on a real year of baskets (The Complete Journey).

Protocol: replay weeks 1-40 through the library with explicit times; then, for every
visit in weeks 41-53 in time order, call ``enter`` just before the visit and check the
visit out, presenting every printed coupon whose category is in the basket. Store-wide
category aggregates are refreshed weekly (as a nightly purge would). Reported, next to
two baselines computed at the same moments in the same run:

* hit@3        - the visit buys at least one suggested category;
* precision@3  - share of suggested categories the visit buys;
* discovery    - the visit buys a suggested category the card has not bought in the
                 previous 8 weeks;
* coverage     - share of visits with at least one coupon (caps and fatigue cut this);
* redemption   - share of printed coupons redeemed;
* enter latency p50 / p99 with the year loaded.

    python benchmarks/suggestions.py [--json benchmarks/results/suggestions.json] [--limit-households N]
                                     [--snapshot DIR]

``--snapshot DIR`` keeps the home as replayed to week 40 in DIR (written on the first
run, copied and reused by later runs with the same households), so that changes to
the entrance can be measured without replaying the 40 weeks again.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from anoncard import Service  # noqa: E402
from anoncard.suggest import suggest  # noqa: E402
from benchmarks.common import on, write_json  # noqa: E402
from benchmarks.completejourney import load, open_home, programme_text, request  # noqa: E402

SPLIT_WEEK = 40
K = 3


class Scores:
    def __init__(self) -> None:
        self.visits = self.hits = self.suggested = self.bought = self.discoveries = self.covered = 0

    def add(self, suggested: list[str], basket: set[str], recent: set[str]) -> None:
        self.visits += 1
        got = [c for c in suggested if c in basket]
        self.covered += bool(suggested)
        self.hits += bool(got)
        self.suggested += len(suggested)
        self.bought += len(got)
        self.discoveries += any(c not in recent for c in got)

    def row(self) -> dict:
        v = max(self.visits, 1)
        return {
            "hit@3": round(self.hits / v, 4),
            "precision@3": round(self.bought / max(self.suggested, 1), 4),
            "discovery": round(self.discoveries / v, 4),
            "coverage": round(self.covered / v, 4),
        }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--limit-households", type=int, default=0, help="use only the first N households (smoke runs)")
    ap.add_argument("--snapshot", type=Path, help="save (or reuse) the home replayed to week 40 in this directory")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    baskets, departments = load()
    if args.limit_households:
        keep = sorted({b.household for b in baskets})[: args.limit_households]
        keep_set = set(keep)
        baskets = [b for b in baskets if b.household in keep_set]
    households = sorted({b.household for b in baskets})
    print(f"loaded {len(baskets)} baskets of {len(households)} households in {time.perf_counter() - t0:.1f} s")

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        snapshot = args.snapshot / f"week{SPLIT_WEEK}-{len(households)}" if args.snapshot else None
        t1 = time.perf_counter()
        if snapshot is not None and (snapshot / "cards.json").exists():
            shutil.copytree(snapshot / "home", home)
            (home / "programme.toml").write_text(programme_text(departments))  # the data is reused, not the rules
            cards = {int(h): c for h, c in json.loads((snapshot / "cards.json").read_text()).items()}
            svc = Service.open(home, synchronous="NORMAL")
            replay_s = None  # nothing was replayed in this run
            print(f"reused the week-{SPLIT_WEEK} home in {snapshot}")
        else:
            svc, cards = open_home(home, departments, households)
            train = [b for b in baskets if b.week <= SPLIT_WEEK]
            for i, b in enumerate(train):
                on(svc, b.at).checkout(request(cards[b.household], b))
                if i % 20000 == 0:
                    print(f"  replay {i}/{len(train)}", file=sys.stderr)
            svc.refresh_stats()
            replay_s = round(time.perf_counter() - t1, 1)
            print(f"replayed weeks 1-{SPLIT_WEEK}: {len(train)} baskets in {replay_s} s")
            if snapshot is not None:
                svc.close()
                shutil.rmtree(snapshot, ignore_errors=True)
                shutil.copytree(home, snapshot / "home")
                # card codes are card secrets: readable by their owner only, like the key ring beside them
                fd = os.open(snapshot / "cards.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(json.dumps(cards))
                svc = Service.open(home, synchronous="NORMAL")

        engine, popular, personal = Scores(), Scores(), Scores()
        ranking, habits_only = Scores(), Scores()  # the engine alone, without caps, fatigue or held coupons
        issued = redeemed = 0
        latencies: list[float] = []
        kinds: Counter = Counter()
        test = [b for b in baskets if b.week > SPLIT_WEEK]
        week = SPLIT_WEEK
        shares = svc.category_stats().shares
        for i, b in enumerate(test):
            if b.week != week:
                week = b.week
                svc.refresh_stats()
                shares = svc.category_stats().shares
            code = cards[b.household]
            basket = {c for c, _a in b.lines}
            card_id = svc.store.find_card(svc.ring.tokens(_secret(code))).id
            history, _aff, _visits = svc.store.card_profile(card_id)
            since = (b.at.date() - timedelta(weeks=8)).isoformat()
            recent = {c for d, c, n in history if d >= since and n > 0}
            counts: Counter = Counter()
            for _d, c, n in history:
                counts[c] += n
            stats = svc.category_stats()
            department = svc.programme.department
            ranking.add(
                [x.category for x in suggest(history, _visits, today=b.at.date(), stats=stats, department=department)],
                basket,
                recent,
            )
            habits_only.add(
                [
                    x.category
                    for x in suggest(
                        history, _visits, today=b.at.date(), stats=stats, department=department, discovery=False
                    )
                ],
                basket,
                recent,
            )
            top_pop = sorted(shares, key=lambda c: -shares[c])[:K]
            top_personal = sorted(counts, key=lambda c: (-counts[c], -shares.get(c, 0)))[:K]
            if len(top_personal) < K:
                top_personal += [c for c in top_pop if c not in top_personal][: K - len(top_personal)]

            t = time.perf_counter()
            entrance = on(svc, b.at).enter({"card": code})
            latencies.append(time.perf_counter() - t)
            suggested = [c.category for c in entrance.coupons]
            engine.add(suggested, basket, recent)
            popular.add(top_pop, basket, recent)
            personal.add(top_personal, basket, recent)
            issued += sum(c.new for c in entrance.coupons)
            use = [c.code for c in entrance.coupons if c.category in basket]
            kinds.update(c.kind for c in entrance.coupons if c.category in basket)
            redeemed += len(use)
            on(svc, b.at).checkout(request(code, b, use))
            if i % 5000 == 0:
                print(f"  visits {i}/{len(test)}: hit@3 so far {engine.row()['hit@3']}", file=sys.stderr)
        svc.close()

    lat = sorted(latencies)
    result = {
        "benchmark": "suggestions",
        "protocol": f"history weeks 1-{SPLIT_WEEK}, enter + checkout for every visit in weeks {SPLIT_WEEK + 1}-53",
        "households": len(households),
        "test_visits": engine.visits,
        "anoncard": engine.row(),
        "engine_ranking_without_caps": ranking.row(),
        "engine_habits_only_without_caps": habits_only.row(),
        "baseline_popularity": popular.row(),
        "baseline_personal_frequency": personal.row(),
        "coupons_issued": issued,
        "coupon_redemption_rate": round(redeemed / max(issued, 1), 4),
        "enter_latency_ms": {
            "p50": round(statistics.median(lat) * 1000, 3),
            "p99": round(lat[int(len(lat) * 0.99) - 1] * 1000, 3),
            "n": len(lat),
        },
        "replay_weeks_1_40_s": replay_s,
    }
    print()
    print(f"{'':28} {'hit@3':>7} {'prec@3':>7} {'discov':>7} {'cover':>7}")
    for name, key in (("anoncard (enter, with caps)", "anoncard"),
                      ("engine ranking, no caps", "engine_ranking_without_caps"),
                      ("engine habits only, no caps", "engine_habits_only_without_caps"),
                      ("baseline: popularity", "baseline_popularity"),
                      ("baseline: personal freq.", "baseline_personal_frequency")):  # fmt: skip
        r = result[key]
        print(f"{name:28} {r['hit@3']:7.3f} {r['precision@3']:7.3f} {r['discovery']:7.3f} {r['coverage']:7.3f}")
    print(f"coupons issued {issued}, redemption rate {result['coupon_redemption_rate']:.3f}")
    print(f"enter latency p50 {result['enter_latency_ms']['p50']} ms, p99 {result['enter_latency_ms']['p99']} ms")
    return write_json(args.json, result)


def _secret(code: str):
    from anoncard import cards

    return cards.decode(code)


if __name__ == "__main__":
    main()
