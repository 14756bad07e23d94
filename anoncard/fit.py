"""The nightly fit of the suggestion model, on the store's own day-level history.

Design overview. Every visit day of the last ``train_days`` (of a seeded sample of cards
when there are many) is an *origin*: the card's history is read as the entrance would
have read it the morning of that day (``Store.card_profile``'s window: its last 60 visit
days, at least ``discovery_weeks``), its candidates get their features, and the label
is whether the category was bought that day. Origins of the last ``valid_days`` are held
out (a rolling origin: the model is always judged on days after those it learned from):
they choose the number of trees (early stopping) and the set choice's parameters (the
recency half-life and smoothing, by hit@3 of the chosen three), and then the model is
fitted again on every origin with that number of trees. The booster is LightGBM (the
``suggest`` extra, imported here only); what is written is its trees as plain numbers
(:mod:`anoncard.ranker`), so the entrance evaluates them without it.
"""

from __future__ import annotations

import random
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date

from . import ranker
from .errors import ModelError
from .ranker import FEATURES, CardHistory, Model, Trees
from .suggest import StoreStats

WINDOW_VISIT_DAYS = 60  # as Store.card_profile reads at the entrance
HALF_LIVES = (30.0, 90.0, 365.0)
SMOOTHINGS = (0.5, 2.0, 8.0)
DISCOVERY_TARGET = 0.07  # with a target, the weight is the smallest that reaches this share of discovered visits
DISCOVERY_WEIGHTS = (1.5, 2.0, 2.5, 3.0, 4.0, 5.0)
PARAMS = {
    "objective": "binary",
    "learning_rate": 0.08,
    "num_leaves": 15,
    "min_data_in_leaf": 200,
    "lambda_l2": 1.0,
    "max_bin": 63,
    "deterministic": True,
    "force_row_wise": True,
    "num_threads": 1,
    "verbose": -1,
}
MAX_ROUNDS = 300
MAX_CARDS = 12_000  # a seeded sample of cards beyond this: 30 000 origins need no more


@dataclass
class Origin:
    """A held-out visit day: the card as read that morning, what it bought, its candidates'
    chances under the held-out model (filled in once, then replayed under each setting)."""

    card: CardHistory
    bought: set[str]
    habits: list[str]
    lapsed: list[str]
    p: dict[str, float] | None = None
    q: dict[str, float] | None = None


@dataclass
class FitReport:
    model: Model
    seconds_features: float
    seconds_boosting: float
    validation: dict


def origin(
    visit_days: list[int], days: dict[str, list[int]], affinity: list, i: int, discovery_weeks: int
) -> tuple[CardHistory, set[str]]:
    """The card on its ``i``-th visit day, as the entrance read it that morning
    (``Store.card_profile``'s window), and what it bought that day."""
    day = visit_days[i]
    lo = max(0, i - WINDOW_VISIT_DAYS)
    if i - lo == WINDOW_VISIT_DAYS:  # the window reaches back at least discovery_weeks
        lo = min(lo, bisect_left(visit_days, day - 7 * discovery_weeks))
    window = visit_days[lo:i]
    first = window[0]
    seen = {}
    bought = set()
    for c, ds in days.items():
        j, k = bisect_left(ds, first), bisect_left(ds, day)
        if j < k:
            seen[c] = ds[j:k]
        if k < len(ds) and ds[k] == day:
            bought.add(c)
    return CardHistory.of_days(day, window, seen, affinity), bought


def fit(
    cards: Iterable[tuple[list, list, list]],
    stats: StoreStats,
    *,
    today: date,
    usable: Callable[[str], bool],
    seed: int = 0,
    train_days: int = 56,
    valid_days: int = 14,
    max_origins: int = 30_000,
    discovery_weeks: int = 8,
    department: Callable[[str], str] = lambda c: c,
    discovery_target: float = DISCOVERY_TARGET,
    clock: Callable[[], float] | None = None,
) -> FitReport:
    """Fit the model on ``cards``: each ``(history, affinity, visits)`` as ``Store.card_histories`` rows.

    Raises:
        ModelError: the ``suggest`` extra is not installed, or too little history to learn from.
    """
    try:
        import lightgbm as lgb
        import numpy as np
    except ImportError:
        raise ModelError(
            "fitting the suggestion model needs the 'suggest' extra (pip install 'anoncard[suggest]')"
        ) from None
    tick = clock or (lambda: 0.0)
    t0 = tick()
    end = today.toordinal()
    start, valid_start = end - train_days + 1, end - valid_days + 1
    rng = random.Random(seed)
    # first only where the origins are (a card and a visit day), so that a sample is drawn
    # before any features are made and only the held-out days are kept as objects
    parsed: list[tuple[list[int], dict[str, list[int]], list]] = []
    refs: list[tuple[float, int, int]] = []
    for history, affinity, visits in cards:
        visit_days = sorted({date.fromisoformat(d).toordinal() for d, n in visits if n > 0})
        days: dict[str, list[int]] = {}
        for d, c, b in history:
            if b > 0:
                days.setdefault(c, []).append(date.fromisoformat(d).toordinal())
        for ds in days.values():
            ds.sort()
        index = len(parsed)
        parsed.append((visit_days, days, list(affinity)))
        for i in range(bisect_left(visit_days, start), len(visit_days)):
            if i > 0 and visit_days[i] <= end:
                refs.append((rng.random(), index, i))
    n_cards = len(parsed)
    if len(refs) > max_origins:
        refs.sort()
        refs = refs[:max_origins]
    refs.sort(key=lambda r: (r[1], r[2]))
    shape = len(FEATURES)
    train = {"habits": (array("d"), array("d")), "lapsed": (array("d"), array("d"))}
    valid: list[Origin] = []
    for _r, index, i in refs:
        visit_days, days, affinity = parsed[index]
        card, bought = origin(visit_days, days, affinity, i, discovery_weeks)
        habits, lapsed = card.candidates(stats, discovery_weeks, usable)
        if card.today >= valid_start:
            valid.append(Origin(card, bought, habits, lapsed))
            continue
        for which, candidates in (("habits", habits), ("lapsed", lapsed)):
            x, y = train[which]
            for c in candidates:
                x.extend(card.features(c, stats))
                y.append(1.0 if c in bought else 0.0)
    n_train = sum(1 for _r, index, i in refs if parsed[index][0][i] < valid_start)
    if not n_train or not valid:
        raise ModelError(f"too little history to fit: need visits in the last {train_days} days, before and within"
                         f" the last {valid_days}")  # fmt: skip

    def matrix(x: array, y: array):
        return np.frombuffer(x, dtype=np.float64).reshape(-1, shape), np.frombuffer(y, dtype=np.float64)

    def held_out(which: str):
        x, y = array("d"), array("d")
        for o in valid:
            for c in getattr(o, which):
                x.extend(o.card.features(c, stats))
                y.append(1.0 if c in o.bought else 0.0)
        return matrix(x, y)

    data = {("train", which): matrix(*train[which]) for which in train}
    data |= {("valid", which): held_out(which) for which in train}
    t1 = tick()
    params = {**PARAMS, "seed": seed}

    def boost(which: str, rounds: int | None) -> tuple[object, int]:
        xt, yt = data[("train", which)]
        xv, yv = data[("valid", which)]
        if rounds is None:
            dtrain = lgb.Dataset(xt, yt, free_raw_data=False)
            dvalid = lgb.Dataset(xv, yv, reference=dtrain)
            booster = lgb.train(params, dtrain, MAX_ROUNDS, valid_sets=[dvalid],
                                callbacks=[lgb.early_stopping(20, verbose=False)])  # fmt: skip
            return booster, max(booster.best_iteration, 1)
        everything = lgb.Dataset(np.vstack([xt, xv]), np.concatenate([yt, yv]))
        return lgb.train(params, everything, rounds), rounds

    habit_held, habit_rounds = boost("habits", None)
    lapsed_held, lapsed_rounds = boost("lapsed", None)
    held = Model(export(habit_held), export(lapsed_held), 90.0, 2.0, 0.0, {})
    for o in valid:
        o.p, o.q = ranker.scores(o.card, o.habits, o.lapsed, stats=stats, model=held)
    # the set choice's parameters, on the held-out days
    scores = {}
    for h in HALF_LIVES:
        for s in SMOOTHINGS:
            candidate = Model(held.habit, held.discovery, h, s, 0.0, {})
            scores[(h, s)] = _replay(valid, candidate, stats, department, discovery_weeks, 0.0)
    (half_life, smoothing) = max(scores, key=lambda key: (scores[key]["hit@3"], key))
    tuned = Model(held.habit, held.discovery, half_life, smoothing, 0.0, {})
    weights = {w: _replay(valid, tuned, stats, department, discovery_weeks, w) for w in DISCOVERY_WEIGHTS}
    reaching = [w for w in DISCOVERY_WEIGHTS if weights[w]["discovery"] >= discovery_target]
    weight = 0.0 if discovery_target <= 0 else reaching[0] if reaching else DISCOVERY_WEIGHTS[-1]
    habit, _ = boost("habits", habit_rounds)
    lapsed, _ = boost("lapsed", lapsed_rounds)
    rows = sum(len(data[(p, w)][1]) for p in ("train", "valid") for w in ("habits", "lapsed"))
    fitted = {"day": today.isoformat(), "cards": n_cards, "origins": len(refs), "rows": rows, "seed": seed}
    model = Model(export(habit), export(lapsed), half_life, smoothing, weight, fitted)
    t2 = tick()
    validation = {
        "habits_first": scores[(half_life, smoothing)],
        "by_discovery_weight": {str(w): r for w, r in weights.items()},
        "habit_trees": habit_rounds,
        "discovery_trees": lapsed_rounds,
        "train_origins": n_train,
        "valid_origins": len(valid),
    }
    return FitReport(model, round(t1 - t0, 3), round(t2 - t1, 3), validation)


def _replay(
    origins: list[Origin],
    model: Model,
    stats: StoreStats,
    department: Callable[[str], str],
    discovery_weeks: int,
    weight: float,
) -> dict:
    """hit@3, precision@3 and discovery of the chosen three on held-out visit days."""
    hits = bought = shown = found = 0
    for o in origins:
        picks = ranker.pick(o.card, o.p, o.q, model=model, department=department, discovery_weight=weight)
        got = [p.category for p in picks if p.category in o.bought]
        hits += bool(got)
        bought += len(got)
        shown += len(picks)
        found += any(o.card.lapsed(c, discovery_weeks) for c in got)
    n = max(len(origins), 1)
    precision = bought / max(shown, 1)
    return {"hit@3": round(hits / n, 4), "precision@3": round(precision, 4), "discovery": round(found / n, 4)}


def export(booster) -> Trees:
    """A LightGBM booster's trees as plain numbers (numerical splits, ``<=`` to the left)."""
    return Trees(tuple(_flatten(info["tree_structure"]) for info in booster.dump_model()["tree_info"]))


def _flatten(root: dict) -> tuple:
    """One dumped tree as ``(feature, threshold, left, right, leaves)``, nodes in pre-order."""
    feature: list[int] = []
    threshold: list[float] = []
    left: list[int] = []
    right: list[int] = []
    leaves: list[float] = []

    def walk(node: dict) -> int:
        if "leaf_value" in node:
            leaves.append(float(node["leaf_value"]))
            return ~(len(leaves) - 1)
        if node.get("decision_type") != "<=":
            raise ModelError("the booster made a split this version cannot evaluate")
        i = len(feature)
        feature.append(int(node["split_feature"]))
        threshold.append(float(node["threshold"]))
        left.append(0)
        right.append(0)
        left[i] = walk(node["left_child"])
        right[i] = walk(node["right_child"])
        return i

    walk(root)
    return tuple(feature), tuple(threshold), tuple(left), tuple(right), tuple(leaves)
