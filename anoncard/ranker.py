"""The learned suggestion engine: a ranking model over (card, category) candidates.

Design overview. A nightly job (:func:`anoncard.fit.fit`) learns, from the store's own
day-level history, how likely a category is in a card's next basket given a handful of
numbers about the card's history of that category (how often over the window read, with
three half-lives; how long since the last buy, against the card's usual gap; how long
since the first; what the card bought on its last visit and how that goes with the
category store-wide) and the category's store-wide share. The model is a sum of small
regression trees over those numbers; it holds thresholds and leaf values, the names of
its features and counts of what it was fitted on - nothing about any card (the codec
below accepts nothing else). It is written as JSON in the home and evaluated here, in
plain Python: the entrance needs no numerical library.

At the entrance (:func:`choose`), the habit model scores the card's candidates, and the
three coupons are chosen as a set: the first is the likeliest category; each later one is
scored by its chance on the visits the earlier picks leave uncovered (the card's own
visits, weighted by recency: a category usually bought together with the first pick adds
little). The last slot may instead go to a *discovery* - a category the card has not
bought for ``discovery_weeks`` or never - scored by a second model fitted on such
candidates only; it is printed when ``discovery_weight`` times its chance beats the next
habit's. Department limits, exclusions (held and resting coupons) and the vocabulary's
sensitive categories apply to every slot.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date

from .errors import ModelError
from .suggest import StoreStats, Suggestion

FORMAT = "anoncard-suggestion-model"
VERSION = 1
MODEL_NAME = "suggestion-model.json"
MAX_PER_DEPARTMENT = 2
HALF_LIVES = (30.0, 90.0, 365.0)  # of the decayed shares among the features
NEVER = 999.0  # days since a purchase that did not happen (in the window read)
RESTOCK_TODAY = 0.55  # a category already in today's basket (the fit sees days, not baskets)
POPULAR_CANDIDATES = 8  # store categories looked at for every card
COMPLEMENT_CANDIDATES = 6  # categories bought with the card's last visit, store-wide
MAX_HABIT_CANDIDATES = 24  # the card's categories bought lately that the model scores (by decayed share)
MAX_LAPSED_CANDIDATES = 10  # and its own lapsed ones

FEATURES = (
    "share_window",  # days with the category / visit days read
    "share_hl30",  # the same, visit days weighted with a 30-day half-life
    "share_hl90",
    "share_hl365",
    "days_since_last",  # NEVER if not in the window
    "gap_ratio",  # days since last / the card's mean interval for it (-1 with fewer than two buys)
    "days_bought",
    "days_since_first_buy",  # NEVER if not in the window
    "bought_last_visit",
    "bought_last_5_visits",
    "store_share",  # share of all baskets holding it, store-wide
    "with_last_visit",  # mean store-wide chance of it given each category of the card's last visit
    "affinity",  # undated totals from expired history, relative to the card's largest
    "visit_days",
    "days_since_first_visit",
    "days_since_last_visit",
    "visits_per_week",
)


# -- the model and its file ----------------------------------------------------------------


@dataclass(frozen=True)
class Trees:
    """A sum of regression trees. Each tree is ``(feature, threshold, left, right, leaves)``:
    internal node ``i`` sends ``x[feature[i]] <= threshold[i]`` to ``left[i]``, else to
    ``right[i]``; a child ``>= 0`` is an internal node (always later than its parent, so
    every walk ends), a child ``< 0`` is leaf ``~child``. A tree without internal nodes is
    its one leaf."""

    trees: tuple[tuple[tuple[int, ...], tuple[float, ...], tuple[int, ...], tuple[int, ...], tuple[float, ...]], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_score", _compile(self.trees))

    def raw(self, x: list[float]) -> float:
        """The sum of the leaves ``x`` reaches (the log-odds)."""
        return self._score(x)

    def walk(self, x: list[float]) -> float:
        """:meth:`raw` by walking the node lists (what the compiled form must agree with)."""
        total = 0.0
        for feature, threshold, left, right, leaves in self.trees:
            node = 0 if feature else ~0
            while node >= 0:
                node = left[node] if x[feature[node]] <= threshold[node] else right[node]
            total += leaves[~node]
        return total

    def probability(self, x: list[float]) -> float:
        z = self._score(x)
        if z < -60:
            return 0.0
        return 1.0 / (1.0 + math.exp(-z))


def _compile(trees: tuple) -> Callable[[list[float]], float]:
    """The trees as one Python expression of comparisons, compiled once: the entrance scores
    dozens of candidates with hundreds of trees, ten times faster than walking node lists.
    The source is made of integers and ``repr`` of floats only (the codec checked every one),
    so nothing read from the file can become code."""

    def node(tree: tuple, i: int) -> str:
        feature, threshold, left, right, leaves = tree
        if i < 0:
            return repr(float(leaves[~i]))
        f, t = int(feature[i]), float(threshold[i])
        return f"({node(tree, left[i])} if x[{f}] <= {t!r} else {node(tree, right[i])})"

    parts = [node(tree, 0 if tree[0] else ~0) for tree in trees] or ["0.0"]
    # a long sum in chunks: the parser's nesting limit is per expression, not per statement
    lines = ["def score(x):", "    s = 0.0"]
    lines += [f"    s += {part}" for part in parts]
    lines.append("    return s")
    namespace: dict = {}
    exec(compile("\n".join(lines), "<suggestion model>", "exec"), {"__builtins__": {}}, namespace)  # noqa: S102
    return namespace["score"]


@dataclass(frozen=True)
class Model:
    """The fitted engine: a habit model, a discovery model, the set choice's parameters and
    what it was fitted on (counts and a day only)."""

    habit: Trees
    discovery: Trees
    coverage_half_life: float  # days: the weight of the card's past visits in the set choice
    smoothing: float  # pseudo-visits shrinking the uncovered visits' share towards the model's chance
    discovery_weight: float  # default weight of the discovery slot (0: habits only)
    fitted: dict[str, int | str]

    def encode(self) -> bytes:
        """Canonical JSON (sorted keys, no spaces): equal models give equal bytes."""
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "features": list(FEATURES),
            "habit": _trees_doc(self.habit),
            "discovery": _trees_doc(self.discovery),
            "choice": {
                "coverage_half_life": self.coverage_half_life,
                "smoothing": self.smoothing,
                "discovery_weight": self.discovery_weight,
            },
            "fitted": dict(self.fitted),
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.encode()).hexdigest()

    def choose(self, history, visits, **kwargs) -> list[Suggestion]:
        """:func:`choose` with this model."""
        return choose(history, visits, model=self, **kwargs)

    def describe(self) -> dict:
        """What the file holds, for the audit and the fit's report."""
        return {
            "fingerprint": self.fingerprint,
            "features": list(FEATURES),
            "habit_trees": len(self.habit.trees),
            "discovery_trees": len(self.discovery.trees),
            "leaves": sum(len(t[4]) for t in (*self.habit.trees, *self.discovery.trees)),
            "fitted": dict(self.fitted),
        }


FITTED_FIELDS = {"day": str, "cards": int, "origins": int, "rows": int, "seed": int}
MAX_TREES = 2000
MAX_NODES = 4096


def decode(data: bytes) -> Model:
    """Parse a model file, accepting nothing but what :meth:`Model.encode` writes.

    Raises:
        ModelError: not such a file; the message names the field and the rule, never a value.
    """
    try:
        doc = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ModelError("model file: not JSON text", field="model") from None
    _keys(doc, {"format", "version", "features", "habit", "discovery", "choice", "fitted"}, "model")
    if doc["format"] != FORMAT:
        raise ModelError(f"field 'format': must be {FORMAT!r}", field="format")
    if doc["version"] != VERSION or isinstance(doc["version"], bool):
        raise ModelError(f"field 'version': must be {VERSION}", field="version")
    if doc["features"] != list(FEATURES):
        raise ModelError("field 'features': must be this version's features, in order", field="features")
    choice = doc["choice"]
    _keys(choice, {"coverage_half_life", "smoothing", "discovery_weight"}, "choice")
    half_life = _number(choice["coverage_half_life"], "choice.coverage_half_life", low=1.0, high=3650.0)
    smoothing = _number(choice["smoothing"], "choice.smoothing", low=0.0, high=1000.0)
    weight = _number(choice["discovery_weight"], "choice.discovery_weight", low=0.0, high=100.0)
    fitted = doc["fitted"]
    _keys(fitted, set(FITTED_FIELDS), "fitted")
    for name, kind in FITTED_FIELDS.items():
        value = fitted[name]
        if kind is int and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ModelError(f"field 'fitted.{name}': must be a count (an integer >= 0)", field=f"fitted.{name}")
        if kind is str:
            try:
                ok = isinstance(value, str) and date.fromisoformat(value).isoformat() == value
            except ValueError:
                ok = False
            if not ok:
                raise ModelError(f"field 'fitted.{name}': must be a day (YYYY-MM-DD)", field=f"fitted.{name}")
    return Model(
        _trees(doc["habit"], "habit"), _trees(doc["discovery"], "discovery"), half_life, smoothing, weight, fitted
    )


def _no_constant(name: str) -> float:
    raise ValueError(name)


def _keys(doc: object, keys: set[str], where: str) -> None:
    if not isinstance(doc, dict):
        raise ModelError(f"field '{where}': must be an object", field=where)
    if set(doc) != keys:
        raise ModelError(f"field '{where}': must have exactly the fields {sorted(keys)}", field=where)


def _number(value: object, where: str, *, low: float = -1e300, high: float = 1e300) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ModelError(f"field '{where}': must be a number from {low:g} to {high:g}", field=where)
    return float(value)


def _trees_doc(model: Trees) -> list:
    return [[list(f), list(t), list(lo), list(hi), list(v)] for f, t, lo, hi, v in model.trees]


def _trees(doc: object, where: str) -> Trees:
    if not isinstance(doc, list) or len(doc) > MAX_TREES:
        raise ModelError(f"field '{where}': must be a list of at most {MAX_TREES} trees", field=where)
    trees = []
    for i, tree in enumerate(doc):
        at = f"{where}[{i}]"
        if not isinstance(tree, list) or len(tree) != 5 or not all(isinstance(part, list) for part in tree):
            raise ModelError(f"field '{at}': must be five lists (feature, threshold, left, right, leaves)", field=at)
        feature, threshold, left, right, leaves = tree
        n = len(feature)
        if n > MAX_NODES or not (len(threshold) == len(left) == len(right) == n) or len(leaves) != n + 1:
            raise ModelError(f"field '{at}': n nodes need n thresholds and children and n + 1 leaves", field=at)
        for j in range(n):
            f = feature[j]
            if isinstance(f, bool) or not isinstance(f, int) or not 0 <= f < len(FEATURES):
                raise ModelError(f"field '{at}': a feature must be an index into 'features'", field=at)
            _number(threshold[j], f"{at}.threshold", low=-sys.float_info.max, high=sys.float_info.max)
            for child in (left[j], right[j]):
                if isinstance(child, bool) or not isinstance(child, int) or not (j < child < n or -n - 1 <= child < 0):
                    raise ModelError(f"field '{at}': a child must be a later node or a leaf", field=at)
        for v in leaves:
            _number(v, f"{at}.leaves", low=-1e6, high=1e6)
        trees.append(
            (tuple(feature), tuple(float(t) for t in threshold), tuple(left), tuple(right), tuple(map(float, leaves)))
        )
    return Trees(tuple(trees))


# -- one card's history as features ------------------------------------------------------------


class CardHistory:
    """One card's history as the entrance reads it (``Store.card_profile``): days of visits,
    and for each category the days it was bought."""

    def __init__(
        self,
        history: Iterable[tuple[str, str, int]],
        visits: Iterable[tuple[str, int]],
        today: date,
        *,
        affinity: Iterable[tuple[str, int]] = (),
    ) -> None:
        t = today.toordinal()
        ordinal = {d: o for d, n in visits if n > 0 and (o := date.fromisoformat(d).toordinal()) <= t}
        visit_days = sorted(set(ordinal.values()))
        days: dict[str, list[int]] = {}
        for day, category, baskets in history:
            if baskets > 0 and (d := ordinal.get(day)) is not None:
                days.setdefault(category, []).append(d)
        for ds in days.values():
            ds.sort()
        self._prepare(t, visit_days, days, affinity)

    @classmethod
    def of_days(
        cls, today: int, visit_days: list[int], days: dict[str, list[int]], affinity: Iterable[tuple[str, int]] = ()
    ) -> CardHistory:
        """From day ordinals already read: sorted visit days, and sorted days per category."""
        card = cls.__new__(cls)
        card._prepare(today, visit_days, days, affinity)
        return card

    def _prepare(
        self, t: int, visit_days: list[int], days: dict[str, list[int]], affinity: Iterable[tuple[str, int]]
    ) -> None:
        self.today, self.visit_days, self.days = t, visit_days, days
        affinity = [(c, b) for c, b in affinity if b > 0]
        top = max((b for _c, b in affinity), default=0)
        self.affinity = {c: b / top for c, b in affinity}
        self.weights = {h: {d: 0.5 ** ((t - d) / h) for d in visit_days} for h in HALF_LIVES}
        self.totals = {h: sum(w.values()) for h, w in self.weights.items()}
        # each category's visit days weighted by each half-life (the features, the candidates'
        # order and the set choice all need them)
        self.mass: dict[float, dict[str, float]] = {}
        for h, w in self.weights.items():
            self.mass[h] = {c: sum(w[d] for d in ds) for c, ds in days.items()}
        last = visit_days[-1] if visit_days else None
        self.last_visit = [c for c, ds in days.items() if ds[-1] == last]
        self.last_5 = set(visit_days[-5:])

    def features(self, category: str, stats: StoreStats) -> list[float]:
        t, n = self.today, len(self.visit_days)
        days = self.days.get(category, ())
        shares = []
        for h in HALF_LIVES:
            total = self.totals[h]
            shares.append(self.mass[h].get(category, 0) / total if total else 0.0)
        if days:
            last, first = days[-1], days[0]
            since_last, since_first = float(t - last), float(t - first)
            gap = (t - last) / ((last - first) / (len(days) - 1)) if len(days) > 1 and last > first else -1.0
        else:
            since_last = since_first = NEVER
            gap = -1.0
        pairs = stats.pairs
        with_last = sum(pairs.get(a, {}).get(category, 0) for a in self.last_visit) / (len(self.last_visit) or 1)
        first_visit = t - self.visit_days[0] if n else NEVER
        last_visit = t - self.visit_days[-1] if n else NEVER
        return [
            len(days) / n if n else 0.0,
            *shares,
            since_last,
            gap,
            float(len(days)),
            since_first,
            1.0 if category in self.last_visit else 0.0,
            float(sum(1 for d in days if d in self.last_5)),
            stats.shares.get(category, 0) / 1e6,
            with_last / 1e6,
            self.affinity.get(category, 0.0),
            float(n),
            float(first_visit),
            float(last_visit),
            7.0 * n / max(first_visit, 7) if n else 0.0,
        ]

    def lapsed(self, category: str, discovery_weeks: int) -> bool:
        """Not bought for ``discovery_weeks`` (or never, in the window read)."""
        days = self.days.get(category)
        return not days or days[-1] < self.today - 7 * discovery_weeks

    def candidates(self, stats: StoreStats, discovery_weeks: int, usable: Callable[[str], bool]) -> tuple[list, list]:
        """``(habits, lapsed)``: the card's categories bought lately, by decayed share, and the
        lapsed or new ones worth scoring (its own old buys, the store's most popular, and what
        goes with its last visit store-wide)."""
        mass = self.mass[90.0]
        own = sorted((c for c in mass if usable(c)), key=lambda c: (-mass[c], c))
        habits = [c for c in own if not self.lapsed(c, discovery_weeks)][:MAX_HABIT_CANDIDATES]
        lapsed = [c for c in own if self.lapsed(c, discovery_weeks)][:MAX_LAPSED_CANDIDATES]
        seen = set(habits) | set(lapsed)
        extra = []
        for c in stats.by_popularity:
            if len(extra) >= POPULAR_CANDIDATES:
                break
            if c not in seen and usable(c):
                extra.append(c)
                seen.add(c)
        together: dict[str, int] = {}
        for a in self.last_visit:
            for c, ppm in stats.top_pairs.get(a, ()):
                together[c] = together.get(c, 0) + ppm
        for c in sorted(together, key=lambda c: (-together[c], c)):
            if len(extra) >= POPULAR_CANDIDATES + COMPLEMENT_CANDIDATES:
                break
            if c not in seen and usable(c):
                extra.append(c)
                seen.add(c)
        # a popular category the card bought lately is a habit candidate already; one it never
        # bought is a new one
        return habits, lapsed + extra


# -- the set choice --------------------------------------------------------------------------


def choose(
    history: Iterable[tuple[str, str, int]],
    visits: Iterable[tuple[str, int]],
    *,
    today: date,
    stats: StoreStats,
    model: Model,
    affinity: Iterable[tuple[str, int]] = (),
    k: int = 3,
    exclude: Iterable[str] = (),
    department: Callable[[str], str] = lambda c: c,
    discovery_weeks: int = 8,
    discovery_weight: float | None = None,
    allowed: Callable[[str], bool] | None = None,
) -> list[Suggestion]:
    """Up to ``k`` categories: the likeliest, then by chance on the visits left uncovered; the
    last slot to a lapsed or new category when ``discovery_weight`` times its chance beats the
    next habit's (``None``: the model's default; 0: habits only)."""
    if k <= 0:
        return []
    weight = model.discovery_weight if discovery_weight is None else discovery_weight
    excluded = set(exclude)

    def usable(c: str) -> bool:
        return c not in excluded and (allowed is None or allowed(c))

    card = CardHistory(history, visits, today, affinity=affinity)
    if not card.visit_days:
        return store_best(stats, k=k, usable=usable, department=department)
    habits, lapsed = card.candidates(stats, discovery_weeks, usable)
    p = habit_scores(card, habits, stats=stats, model=model)
    # the discovery model is asked only when its answer is used (never at habits first, unless
    # no habit is left)
    q = lambda: discovery_scores(card, lapsed, stats=stats, model=model)  # noqa: E731
    return pick(card, p, q, model=model, k=k, department=department, discovery_weight=weight)


def scores(
    card: CardHistory, habits: list[str], lapsed: list[str], *, stats: StoreStats, model: Model
) -> tuple[dict[str, float], dict[str, float]]:
    """The habit model's chance of each habit candidate, the discovery model's of each lapsed
    or new one."""
    p = habit_scores(card, habits, stats=stats, model=model)
    return p, discovery_scores(card, lapsed, stats=stats, model=model)


def habit_scores(card: CardHistory, habits: list[str], *, stats: StoreStats, model: Model) -> dict[str, float]:
    p = {}
    for c in habits:
        p[c] = model.habit.probability(card.features(c, stats))
        if card.days[c][-1] == card.today:
            p[c] *= RESTOCK_TODAY
    return p


def discovery_scores(card: CardHistory, lapsed: list[str], *, stats: StoreStats, model: Model) -> dict[str, float]:
    return {c: model.discovery.probability(card.features(c, stats)) for c in lapsed}


def pick(
    card: CardHistory,
    p: dict[str, float],
    q: dict[str, float] | Callable[[], dict[str, float]],
    *,
    model: Model,
    k: int = 3,
    department: Callable[[str], str] = lambda c: c,
    discovery_weight: float = 0.0,
) -> list[Suggestion]:
    """The set of ``k`` from the candidates' chances (``model`` gives the set choice's parameters)."""
    weight = discovery_weight
    # the set choice works on the card's visits, weighted by recency
    h = model.coverage_half_life
    if h in card.weights:
        w, total, mass = card.weights[h], card.totals[h], card.mass[h]
    else:
        w = {d: 0.5 ** ((card.today - d) / h) for d in card.visit_days}
        total = sum(w.values())
        mass = {c: sum(w[d] for d in card.days[c]) for c in p}
    uncovered = set(card.visit_days)
    kappa = model.smoothing

    dep_count: dict[str, int] = {}
    chosen: list[Suggestion] = []
    taken: set[str] = set()

    def fits(c: str) -> bool:
        return c not in taken and dep_count.get(department(c), 0) < MAX_PER_DEPARTMENT

    def take(c: str, reason: str, score: float) -> None:
        dep_count[department(c)] = dep_count.get(department(c), 0) + 1
        chosen.append(Suggestion(c, reason, score))
        taken.add(c)
        uncovered.difference_update(card.days.get(c, ()))

    def next_habit() -> tuple[str | None, float]:
        left = sum(w[d] for d in uncovered)
        best, best_score = None, -1.0
        for c, pc in p.items():
            if not fits(c):
                continue
            if chosen:  # its chance on the visits the picks so far leave uncovered
                here = sum(w[d] for d in card.days[c] if d in uncovered)
                score = pc * ((here + kappa * pc) / (left + kappa)) / ((mass[c] + kappa * pc) / (total + kappa))
            else:
                score = pc
            if score > best_score or (score == best_score and best is not None and c < best):
                best, best_score = c, score
        return best, best_score

    lapsed: list[dict[str, float]] = []

    def best_lapsed() -> tuple[str | None, float]:
        if not lapsed:
            lapsed.append(q() if callable(q) else q)
        best, best_score = None, -1.0
        for c, qc in lapsed[0].items():
            if fits(c) and (qc > best_score or (qc == best_score and best is not None and c < best)):
                best, best_score = c, qc
        return best, best_score

    while len(chosen) < k:
        habit, habit_score = next_habit()
        last_slot = len(chosen) == k - 1 and k > 1
        if last_slot and weight > 0:
            new, new_score = best_lapsed()
            if new is not None and (habit is None or weight * new_score >= habit_score):
                take(new, "discovery", new_score)
                continue
        if habit is not None:
            take(habit, "habit", habit_score)
            continue
        new, new_score = best_lapsed()  # a card with little history: the likeliest new ones
        if new is None:
            break
        take(new, "habit", new_score)
    return chosen


def store_best(
    stats: StoreStats, *, k: int, usable: Callable[[str], bool], department: Callable[[str], str] = lambda c: c
) -> list[Suggestion]:
    """The store's most popular usable categories (a card with no history, or no model)."""
    picks: list[Suggestion] = []
    per_department: dict[str, int] = {}
    for c in stats.by_popularity:
        if len(picks) >= k:
            break
        if usable(c) and per_department.get(department(c), 0) < MAX_PER_DEPARTMENT:
            per_department[department(c)] = per_department.get(department(c), 0) + 1
            picks.append(Suggestion(c, "habit", stats.shares[c] / 1e6))
    return picks
