"""Entrance suggestions measured on a real year of baskets (The Complete Journey).

Protocol: replay weeks 1-W (``--split``) through the library with explicit times; fit the
suggestion model on that home (``anoncard fit`` in its own process: timed, peak memory); then,
for every visit in weeks W+1-E (``--end``) in time order, call ``enter`` just before the visit
and check the visit out, presenting every printed coupon whose category is in the basket.
Store-wide category aggregates are refreshed weekly (as a nightly purge would). Each engine
measured through ``enter`` (caps on) has its own copy of the home: the ranker habits first
(discovery weight 0), the ranker with the discovery weight the fit chose, and the built-in
engine (no model). In the same loop, at the same moments, without caps: the baselines
(popularity, personal frequency), the built-in engine, its habits only (90-day decayed
frequency with a coverage choice), and the ranker at discovery weights 0, 2.5, 3 and the
fitted one. Reported:

* hit@3        - the visit buys at least one suggested category;
* precision@3  - share of suggested categories the visit buys;
* discovery    - the visit buys a suggested category the card has not bought in the
                 previous 8 weeks;
* coverage     - share of visits with at least one coupon (caps and fatigue cut this);
* coupon value - redemption rate, value handed out per redeemed coupon (discount plus bonus
                 points at their nominal value), and the effective reward rate (coupon value
                 over the spend of the evaluated visits; Kaiser's paper coupons: > 1 %);
* enter latency p50 / p99 with the year loaded.

    python benchmarks/suggestions.py [--split 40] [--end 53] [--seed 0] [--json PATH]
                                     [--limit-households N] [--snapshot DIR] [--engines a,b]

``--snapshot DIR`` keeps the home as replayed to the split in DIR (written on the first
run, copied and reused by later runs with the same households), so that changes to
the entrance can be measured without replaying the weeks again.
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
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from anoncard import Service, ranker  # noqa: E402
from anoncard.money import parse_cents  # noqa: E402
from anoncard.suggest import suggest  # noqa: E402
from benchmarks.common import fit_model, on, write_json  # noqa: E402
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


ENGINES = (
    # (key, label, discovery weight of the model in the home; None: no model, the built-in engine)
    ("ranker_habits_first", "ranker + coverage (habits first)", 0.0),
    ("ranker_with_discovery", "ranker + coverage + discovery slot", "fitted"),
    ("engine_today", "built-in engine (no model)", None),
)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--split", type=int, default=SPLIT_WEEK, help="history up to this week, evaluated after it")
    ap.add_argument("--end", type=int, default=53, help="last week evaluated")
    ap.add_argument("--seed", type=int, default=0, help="seed of the model fit")
    ap.add_argument("--limit-households", type=int, default=0, help="use only the first N households (smoke runs)")
    ap.add_argument("--snapshot", type=Path, help="save (or reuse) the home replayed to the split in this directory")
    ap.add_argument("--engines", default=",".join(e[0] for e in ENGINES),
                    help="the engines measured through enter, caps on (each in its own copy of the home)")  # fmt: skip
    args = ap.parse_args(argv)
    split, last_week = args.split, args.end
    engines = [e for e in ENGINES if e[0] in args.engines.split(",")]

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
        snapshot = args.snapshot / f"week{split}-{len(households)}" if args.snapshot else None
        t1 = time.perf_counter()
        if snapshot is not None and (snapshot / "cards.json").exists():
            shutil.copytree(snapshot / "home", home)
            (home / "programme.toml").write_text(programme_text(departments))  # the data is reused, not the rules
            cards = {int(h): c for h, c in json.loads((snapshot / "cards.json").read_text()).items()}
            replay_s = None  # nothing was replayed in this run
            print(f"reused the week-{split} home in {snapshot}")
        else:
            svc, cards = open_home(home, departments, households)
            train = [b for b in baskets if b.week <= split]
            for i, b in enumerate(train):
                on(svc, b.at).checkout(request(cards[b.household], b))
                if i % 20000 == 0:
                    print(f"  replay {i}/{len(train)}", file=sys.stderr)
            svc.refresh_stats()
            svc.close()
            replay_s = round(time.perf_counter() - t1, 1)
            print(f"replayed weeks 1-{split}: {len(train)} baskets in {replay_s} s")
            if snapshot is not None:
                shutil.rmtree(snapshot, ignore_errors=True)
                shutil.copytree(home, snapshot / "home")
                # card codes are card secrets: readable by their owner only, like the key ring beside them
                fd = os.open(snapshot / "cards.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(json.dumps(cards))
        train_last = max(b.at for b in baskets if b.week <= split)
        fit_report = fit_model(home, train_last, args.seed)
        print(f"fit: {fit_report['seconds']} s, peak RSS {fit_report['peak_rss_mb']} MB, "
              f"{fit_report['habit_trees']} + {fit_report['discovery_trees']} trees, "
              f"discovery weight {fit_report['discovery_weight']}")  # fmt: skip
        model = ranker.decode((home / ranker.MODEL_NAME).read_bytes())
        services = {}
        for key, _label, weight in engines:
            copy = Path(tmp) / key
            shutil.copytree(home, copy)
            if weight is None:
                (copy / ranker.MODEL_NAME).unlink()
            elif weight != "fitted":
                (copy / ranker.MODEL_NAME).write_bytes(replace(model, discovery_weight=weight).encode())
            services[key] = Service.open(copy, synchronous="NORMAL")
        shutil.rmtree(home)
        svc = next(iter(services.values()))
        fitted_weight = model.discovery_weight

        capped = {key: Scores() for key in services}
        value = {key: Counter() for key in services}
        latencies: dict[str, list[float]] = {key: [] for key in services}
        nocaps = {
            "baseline_popularity": Scores(),
            "baseline_personal_frequency": Scores(),
            "engine_today_no_caps": Scores(),
            "decayed_frequency_coverage_no_caps": Scores(),
            "ranker_coverage_no_caps": Scores(),
            "ranker_discovery_2.5_no_caps": Scores(),
            "ranker_discovery_3_no_caps": Scores(),
            f"ranker_discovery_{fitted_weight:g}_no_caps": Scores(),
        }
        no_caps_weights = {"ranker_discovery_2.5_no_caps": 2.5, "ranker_discovery_3_no_caps": 3.0,
                           f"ranker_discovery_{fitted_weight:g}_no_caps": fitted_weight}  # fmt: skip
        test = [b for b in baskets if split < b.week <= last_week]
        spend = 0
        week = split
        shares = svc.category_stats().shares
        department = svc.programme.department
        allowed = svc._suggestible
        for i, b in enumerate(test):
            if b.week != week:
                week = b.week
                for s in services.values():
                    s.refresh_stats()
                shares = svc.category_stats().shares
            code = cards[b.household]
            basket = {c for c, _a in b.lines}
            spend += sum(a for _c, a in b.lines)
            today = b.at.date()
            card_id = svc.store.find_card(svc.ring.tokens(_secret(code))).id
            since = (today - timedelta(weeks=8)).isoformat()
            history, affinity, visits = svc.store.card_profile(card_id, since=since)
            recent = {c for d, c, n in history if d >= since and n > 0}
            counts: Counter = Counter()
            for _d, c, n in history:
                counts[c] += n
            stats = svc.category_stats()
            common = {"today": today, "stats": stats, "department": department, "affinity": affinity,
                      "allowed": allowed}  # fmt: skip
            nocaps["engine_today_no_caps"].add([x.category for x in suggest(history, visits, **common)], basket, recent)
            nocaps["decayed_frequency_coverage_no_caps"].add(
                [x.category for x in suggest(history, visits, discovery=False, **common)], basket, recent
            )
            nocaps["ranker_coverage_no_caps"].add(
                [x.category for x in model.choose(history, visits, discovery_weight=0.0, **common)], basket, recent
            )
            for key, w in no_caps_weights.items():
                picks = model.choose(history, visits, discovery_weight=w, **common)
                nocaps[key].add([x.category for x in picks], basket, recent)
            usable = [c for c in sorted(shares, key=lambda c: -shares[c]) if allowed(c)]
            top_pop = usable[:K]
            top_personal = sorted((c for c in counts if allowed(c)), key=lambda c: (-counts[c], -shares.get(c, 0)))[:K]
            if len(top_personal) < K:
                top_personal += [c for c in top_pop if c not in top_personal][: K - len(top_personal)]
            nocaps["baseline_popularity"].add(top_pop, basket, recent)
            nocaps["baseline_personal_frequency"].add(top_personal, basket, recent)

            for key, s in services.items():
                t = time.perf_counter()
                entrance = on(s, b.at).enter({"card": code})
                latencies[key].append(time.perf_counter() - t)
                capped[key].add([c.category for c in entrance.coupons], basket, recent)
                value[key]["issued"] += sum(c.new for c in entrance.coupons)
                use = [c.code for c in entrance.coupons if c.category in basket]
                receipt = on(s, b.at).checkout(request(code, b, use))
                for line in receipt.coupons:
                    value[key]["redeemed"] += 1
                    cents = parse_cents(line["discount"], "discount", allow_zero=True)
                    value[key]["value_cents"] += cents + line["bonus_points"] * s.programme.point_value_cents
            if i % 5000 == 0:
                print(f"  visits {i}/{len(test)}", file=sys.stderr)
        for s in services.values():
            s.close()

    result = {
        "benchmark": "suggestions",
        "protocol": f"history weeks 1-{split}, model fitted on it; enter + checkout for every visit in weeks"
        f" {split + 1}-{last_week}; caps on through enter, each engine in its own copy of the home",
        "split": split,
        "end": last_week,
        "households": len(households),
        "test_visits": len(test),
        "fit": fit_report,
        "caps_on": {},
        "no_caps": {key: sc.row() for key, sc in nocaps.items()},
        "replay_s": replay_s,
    }
    for key, label, _w in engines:
        v = value[key]
        lat = sorted(latencies[key])
        result["caps_on"][key] = {
            "label": label,
            **capped[key].row(),
            "coupons_issued": v["issued"],
            "redemption_rate": round(v["redeemed"] / max(v["issued"], 1), 4),
            "value_per_redeemed_cents": round(float(v["value_cents"]) / max(v["redeemed"], 1), 1),
            "reward_rate_percent": round(100 * float(v["value_cents"]) / max(spend, 1), 3),
            "enter_p50_ms": round(statistics.median(lat) * 1000, 3),
            "enter_p99_ms": round(lat[int(len(lat) * 0.99) - 1] * 1000, 3),
        }
    print()
    print(f"split {split}, weeks {split + 1}-{last_week}, {len(test)} visits")
    print(f"{'':44} {'hit@3':>7} {'prec@3':>7} {'discov':>7} {'cover':>7}")
    for key, r in result["no_caps"].items():
        print(f"{key:44} {r['hit@3']:7.3f} {r['precision@3']:7.3f} {r['discovery']:7.3f} {r['coverage']:7.3f}")
    for key, r in result["caps_on"].items():
        print(f"{key + ' (enter, caps on)':44} {r['hit@3']:7.3f} {r['precision@3']:7.3f} {r['discovery']:7.3f}"
              f" {r['coverage']:7.3f}  redeemed {r['redemption_rate']:.3f}, {r['value_per_redeemed_cents']} c each,"
              f" reward rate {r['reward_rate_percent']} %,"
              f" enter p50 {r['enter_p50_ms']} p99 {r['enter_p99_ms']} ms")  # fmt: skip
    return write_json(args.json, result)


def _secret(code: str):
    from anoncard import cards

    return cards.decode(code)


if __name__ == "__main__":
    main()
