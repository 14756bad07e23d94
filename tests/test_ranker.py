"""The learned suggestion engine: its model file's codec, its evaluator, the nightly fit, and
the entrance with a model in the home (store's best for a new card, never a sensitive category)."""

from __future__ import annotations

import contextlib
import json
import math
import random
import subprocess
import sys
from dataclasses import replace
from datetime import date, datetime, time, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anoncard import Programme, Service, audit, init_home, ranker
from anoncard.errors import ModelError
from anoncard.programme import DEFAULT_TOML
from anoncard.ranker import FEATURES, Model, Trees
from anoncard.suggest import StoreStats
from tests.cli_helpers import copy_home
from tests.conftest import basket, clock_at
from tests.pg_cluster import give_own_database

START = date(2016, 1, 4)
DAYS = 84
FIT_DAY = START + timedelta(days=DAYS - 1)
HABITS = ["milk", "bread", "coffee", "cheese", "fruit", "vegetables", "beer", "wine", "snacks", "water", "eggs"]
OTHERS = ["chocolate", "tea", "cereals", "frozen", "cleaning", "juice", "nuts", "candles", "herbs", "pharmacy"]


def shop(svc: Service, cards: int = 36, seed: int = 5, start: date = START) -> list[str]:
    """Twelve weeks of a small store: each card has its own habits and shops on about a third of the days."""
    rng = random.Random(seed)
    codes = [s.code for s in svc.issue_cards({"count": cards})]
    plans = [({c: rng.uniform(0.2, 0.9) for c in rng.sample(HABITS, 5)}, rng.uniform(0.2, 0.5)) for _ in codes]
    n = 0
    for day in range(DAYS):
        when = datetime.combine(start + timedelta(days=day), time(11))
        for code, (habits, rate) in zip(codes, plans, strict=True):
            if rng.random() > rate:
                continue
            lines = [c for c, p in habits.items() if rng.random() < p] + rng.sample(OTHERS, rng.randint(0, 2))
            lines = sorted(set(lines)) or ["milk"]
            svc.clock = clock_at(when)
            svc.checkout({"card": code, "txn": f"t{n}", "lines": basket(*((c, "2.50") for c in lines))})
            n += 1
        if day % 7 == 6:
            svc.refresh_stats()
    svc.clock = clock_at(datetime.combine(start + timedelta(days=DAYS - 1), time(22)))
    return codes


def open_programme() -> str:
    """The default programme with pharmacy declared an ordinary category (as before it was flagged)."""
    return DEFAULT_TOML.replace('pharmacy = { department = "health", flags = ["sensitive"] }',
                                'pharmacy = { department = "health" }')  # fmt: skip


@pytest.fixture(scope="module")
def store_home(tmp_path_factory):
    """A home with twelve weeks of history in which pharmacy was an ordinary category, now sensitive again."""
    home = tmp_path_factory.mktemp("ranker") / "home"
    give_own_database(home)
    init_home(home, today=START)
    (home / "programme.toml").write_text(open_programme())
    with Service.open(home, clock=clock_at(START), synchronous="NORMAL") as svc:
        codes = shop(svc)
    (home / "programme.toml").write_text(DEFAULT_TOML)
    return home, codes


@pytest.fixture
def fitted(store_home, tmp_path):
    src, codes = store_home
    home = tmp_path / "home"
    copy_home(src, home)
    svc = Service.open(home, clock=clock_at(datetime.combine(FIT_DAY, time(22))), synchronous="NORMAL")
    report = svc.fit_suggestions(seed=3)
    yield svc, codes, report
    svc.close()


# -- the codec --------------------------------------------------------------------------------


@st.composite
def tree(draw) -> tuple:
    """A random full binary tree in pre-order, as ``Trees`` holds one."""
    feature: list[int] = []
    threshold: list[float] = []
    left: list[int] = []
    right: list[int] = []
    leaves: list[float] = []

    def build(internal: int) -> int:
        if internal == 0:
            leaves.append(draw(st.floats(-10, 10, allow_nan=False)))
            return ~(len(leaves) - 1)
        i = len(feature)
        feature.append(draw(st.integers(0, len(FEATURES) - 1)))
        threshold.append(draw(st.floats(-1e6, 1e6, allow_nan=False)))
        left.append(0)
        right.append(0)
        on_left = draw(st.integers(0, internal - 1))
        left[i] = build(on_left)
        right[i] = build(internal - 1 - on_left)
        return i

    build(draw(st.integers(0, 7)))
    return tuple(feature), tuple(threshold), tuple(left), tuple(right), tuple(leaves)


def trees() -> st.SearchStrategy[Trees]:
    return st.lists(tree(), max_size=4).map(lambda ts: Trees(tuple(ts)))


@st.composite
def models(draw) -> Model:
    return Model(
        draw(trees()),
        draw(trees()),
        draw(st.floats(1, 3650)),
        draw(st.floats(0, 1000)),
        draw(st.floats(0, 100)),
        {
            "day": draw(st.dates(date(2000, 1, 1), date(2100, 1, 1))).isoformat(),
            "cards": draw(st.integers(0, 10**7)),
            "origins": draw(st.integers(0, 10**7)),
            "rows": draw(st.integers(0, 10**9)),
            "seed": draw(st.integers(0, 2**31)),
        },
    )


@given(models())
def test_the_model_file_round_trips_and_is_canonical(model):
    data = model.encode()
    back = ranker.decode(data)
    assert back == model
    assert back.encode() == data and back.fingerprint == model.fingerprint


@given(models(), st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=len(FEATURES), max_size=len(FEATURES)))
def test_the_compiled_trees_agree_with_walking_them(model, x):
    assert model.habit.raw(x) == model.habit.walk(x)
    assert model.discovery.raw(x) == model.discovery.walk(x)
    p = model.habit.probability(x)
    assert 0.0 <= p <= 1.0


def _mutations(doc: dict):
    """Documents that break one rule each, with the field the error must name."""
    yield {**doc, "extra": 1}, "model"
    yield {k: v for k, v in doc.items() if k != "fitted"}, "model"
    yield {**doc, "format": "pickle"}, "format"
    yield {**doc, "version": 2}, "version"
    yield {**doc, "version": True}, "version"
    yield {**doc, "features": doc["features"][::-1]}, "features"
    yield {**doc, "choice": {**doc["choice"], "smoothing": -1}}, "choice.smoothing"
    yield {**doc, "choice": {**doc["choice"], "card": "x"}}, "choice"
    yield {**doc, "fitted": {**doc["fitted"], "cards": -1}}, "fitted.cards"
    yield {**doc, "fitted": {**doc["fitted"], "day": "yesterday"}}, "fitted.day"
    yield {**doc, "fitted": {**doc["fitted"], "token": "00ff"}}, "fitted"
    tree = [[3, 4], [0.5, 1.5], [1, ~1], [~0, ~2], [0.1, 0.2, 0.3]]
    yield {**doc, "habit": [[[3, 4], [0.5, 1.5], [1, 0], [~0, ~2], [0.1, 0.2, 0.3]]]}, "habit[0]"  # a cycle
    yield {**doc, "habit": [[[99, 4], *tree[1:]]]}, "habit[0]"
    yield {**doc, "habit": [[*tree[:4], [0.1, 0.2]]]}, "habit[0]"
    yield {**doc, "habit": [[tree[0], [0.5, "1.5"], *tree[2:]]]}, "habit[0].threshold"
    yield {**doc, "discovery": [[*tree[:4], [0.1, 0.2, 1e9]]]}, "discovery[0].leaves"
    yield {**doc, "discovery": "trees"}, "discovery"


def test_the_codec_refuses_each_broken_rule_naming_the_field_not_the_value():
    model = Model(Trees(()), Trees(()), 90.0, 2.0, 0.0, {"day": "2016-03-27", "cards": 1, "origins": 2, "rows": 3,
                                                          "seed": 0})  # fmt: skip
    doc = json.loads(model.encode())
    tree = [[3, 4], [0.5, 1.5], [1, ~1], [~0, ~2], [0.1, 0.2, 0.3]]
    assert ranker.decode(json.dumps({**doc, "habit": [tree]}).encode()).habit.raw([0.0] * len(FEATURES)) == 0.2
    for broken, field in _mutations(doc):
        with pytest.raises(ModelError) as exc:
            ranker.decode(json.dumps(broken).encode())
        assert exc.value.field == field and f"'{field}'" in exc.value.message
        assert "pickle" not in exc.value.message and "yesterday" not in exc.value.message
    for raw in (b"", b"\xff\xfe", b"[1, 2]", b"{\"format\": NaN}", b"{" * 100_000):
        with pytest.raises(ModelError):
            ranker.decode(raw)


@settings(max_examples=200)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=20))  # fmt: skip
def test_any_json_is_a_model_or_a_model_error(doc):
    with contextlib.suppress(ModelError):
        ranker.decode(json.dumps(doc).encode())


# -- the choice -------------------------------------------------------------------------------

STATS = StoreStats(
    shares={"milk": 400_000, "bread": 350_000, "pharmacy": 380_000, "cheese": 300_000, "beer": 200_000,
            "candles": 20_000, "wine": 100_000},
    recent={},
    pairs={"milk": {"cheese": 300_000}},
)  # fmt: skip
# a model preferring what the card bought often: one tree on share_window
LIKES_HABITS = Model(
    Trees((((0,), (0.3,), (~0,), (~1,), (-2.0, 1.0)),)),
    Trees((((10,), (0.25,), (~0,), (~1,), (-3.0, -1.0)),)),
    90.0,
    2.0,
    0.0,
    {"day": "2016-03-27", "cards": 1, "origins": 1, "rows": 1, "seed": 0},
)


def test_a_card_with_no_history_gets_the_stores_best():
    allowed = Programme.default().vocabulary.suggestible
    picks = ranker.choose([], [], today=START, stats=STATS, model=LIKES_HABITS, allowed=allowed)
    assert [p.category for p in picks] == ["milk", "bread", "cheese"]  # by store share, pharmacy never


cats = st.sampled_from(sorted(STATS.shares))


@given(st.dictionaries(st.integers(0, 200), st.lists(cats, min_size=1, max_size=4), max_size=40), st.integers(0, 3),
       st.sets(cats), st.floats(0, 10))  # fmt: skip
def test_sensitive_categories_and_exclusions_are_never_chosen(visits, k, exclude, weight):
    history = [((START - timedelta(days=d)).isoformat(), c, 1) for d, cs in visits.items() for c in cs]
    days = [((START - timedelta(days=d)).isoformat(), 1) for d in visits]
    allowed = Programme.default().vocabulary.suggestible
    picks = ranker.choose(history, days, today=START, stats=STATS, model=LIKES_HABITS, k=k, exclude=exclude,
                          allowed=allowed, discovery_weight=weight)  # fmt: skip
    names = [p.category for p in picks]
    assert "pharmacy" not in names and not set(names) & exclude
    assert len(names) == len(set(names)) <= k


def test_the_second_pick_covers_the_visits_the_first_misses():
    # milk and cheese come together; beer is on the other visits: as marginals cheese beats beer
    visits = {1: ["milk", "cheese"], 3: ["beer"], 5: ["milk", "cheese"], 7: ["beer"], 9: ["milk", "cheese"],
              11: ["milk"]}  # fmt: skip
    history = [((START - timedelta(days=d)).isoformat(), c, 1) for d, cs in visits.items() for c in cs]
    days = [((START - timedelta(days=d)).isoformat(), 1) for d in visits]
    # milk (4 of 6 visits) > cheese (3) > beer (2) as marginals
    steps = ((0, 0, 0), (0.4, 0.3, 0.55), (1, ~0, ~2), (2, ~1, ~3), (-2.0, -0.5, -0.3, 1.0))
    model = replace(LIKES_HABITS, habit=Trees((steps,)))
    alone = ranker.choose(history, days, today=START, stats=STATS, model=model, k=3, discovery_weight=0.0)
    assert alone[1].category == "beer" and alone[2].category == "cheese"
    picks = ranker.choose(history, days, today=START, stats=STATS, model=model, k=2, discovery_weight=0.0)
    assert [p.category for p in picks] == ["milk", "beer"]


# -- the fit and the entrance -------------------------------------------------------------------


def test_the_fit_is_deterministic_for_a_seed(fitted, tmp_path):
    svc, _codes, report = fitted
    first = (svc.model_path).read_bytes()
    again = svc.fit_suggestions(seed=3)
    assert svc.model_path.read_bytes() == first and again["fingerprint"] == report["fingerprint"]
    model = ranker.decode(first)
    assert model.fitted["seed"] == 3 and model.fitted["day"] == FIT_DAY.isoformat()
    assert model.habit.trees and model.discovery.trees
    assert 1 <= model.fitted["cards"] <= 36 and model.fitted["origins"] > 100


def test_the_exported_trees_score_as_lightgbm_does():
    lgb = pytest.importorskip("lightgbm")
    np = pytest.importorskip("numpy")
    from anoncard.fit import PARAMS, export

    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, len(FEATURES)))
    y = (x[:, 0] + x[:, 3] * x[:, 5] > 0.3).astype(float)
    booster = lgb.train({**PARAMS, "min_data_in_leaf": 20, "seed": 1}, lgb.Dataset(x, y), 30)
    trees = export(booster)
    expected = booster.predict(x[:200], raw_score=True)
    got = [trees.raw(list(map(float, row))) for row in x[:200]]
    assert max(abs(a - b) for a, b in zip(expected, got, strict=True)) < 1e-9


def test_the_entrance_uses_the_model_and_never_a_sensitive_category(fitted):
    svc, codes, _report = fitted
    assert svc.suggestion_model() is not None
    seen = set()
    for i, code in enumerate(codes):
        svc.clock = clock_at(datetime.combine(FIT_DAY + timedelta(days=1 + i // 12), time(9)))
        entrance = svc.enter({"card": code})
        assert 1 <= len(entrance.coupons) <= 3
        seen |= {c.category for c in entrance.coupons}
    history_has_pharmacy = any(
        c == "pharmacy" for cid in svc.store.cards_with_visits() for _d, c, _n in svc.store.card_histories([cid])[0][0]
    )
    assert history_has_pharmacy  # bought while it was an ordinary category...
    assert "pharmacy" not in seen  # ...and never offered now that it is sensitive
    assert seen & set(HABITS)


def test_a_new_card_at_the_entrance_gets_the_stores_best(fitted):
    svc, _codes, _report = fitted
    (code,) = (s.code for s in svc.issue_cards({"count": 1}))
    entrance = svc.enter({"card": code})
    stats = svc.category_stats()
    best = [c for c in stats.by_popularity if svc.programme.vocabulary.suggestible(c)]
    expected = ranker.store_best(stats, k=3, usable=svc._suggestible, department=svc.programme.department)
    assert [c.category for c in entrance.coupons] == [p.category for p in expected]
    assert entrance.coupons[0].category == best[0]


def test_without_a_readable_model_the_entrance_uses_the_built_in_engine(fitted):
    svc, codes, _report = fitted
    svc.model_path.write_bytes(b'{"format": "anoncard-suggestion-model", "card": "x"}')
    assert svc.suggestion_model() is None
    assert svc.enter({"card": codes[0]}).coupons
    svc.model_path.unlink()
    assert svc.suggestion_model() is None
    assert svc.enter({"card": codes[1]}).coupons


def test_too_little_history_is_a_clear_model_error(tmp_path):
    home = tmp_path / "home"
    init_home(home, today=START)
    with Service.open(home, clock=clock_at(START)) as svc:
        with pytest.raises(ModelError, match="too little history"):
            svc.fit_suggestions()
        assert not svc.model_path.exists()


# -- the audit ------------------------------------------------------------------------------------


def test_the_audit_reports_the_model_file(fitted):
    svc, _codes, report = fitted
    home = svc.model_path.parent
    check = next(c for c in audit.run(home, today=FIT_DAY).checks if c.key == "j")
    assert check.passed and report["fingerprint"][:16] in check.evidence
    assert any(report["fingerprint"] in d for d in check.details)
    assert any("counts only, no card" in d for d in check.details)
    svc.model_path.chmod(0o644)
    check = next(c for c in audit.run(home, today=FIT_DAY).checks if c.key == "j")
    assert not check.passed and any("readable by others" in d for d in check.details)
    doc = json.loads(svc.model_path.read_bytes())
    doc["fitted"]["card_token"] = "0123abcd"  # a model that would carry something about a card
    svc.model_path.write_text(json.dumps(doc))
    svc.model_path.chmod(0o600)
    check = next(c for c in audit.run(home, today=FIT_DAY).checks if c.key == "j")
    assert not check.passed and "0123abcd" not in " ".join(check.details)
    svc.model_path.unlink()
    check = next(c for c in audit.run(home, today=FIT_DAY).checks if c.key == "j")
    assert check.passed and "no model file" in check.evidence


# -- the command line --------------------------------------------------------------------------


def test_fit_from_the_command_line_and_no_heavy_import_at_the_entrance(tmp_path):
    from click.testing import CliRunner

    from cli.main import main

    home = tmp_path / "home"
    init_home(home)
    with Service.open(home, synchronous="NORMAL") as svc:  # twelve weeks up to today: the command uses the clock
        codes = shop(svc, cards=24, start=date.today() - timedelta(days=DAYS - 1))
    result = CliRunner().invoke(main, ["--home", str(home), "fit", "--seed", "1", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["fingerprint"] == ranker.decode((home / ranker.MODEL_NAME).read_bytes()).fingerprint
    assert doc["fitted"]["seed"] == 1 and math.isfinite(doc["seconds"])
    script = (
        "import sys, json\n"
        "from cli.main import main\n"
        "try:\n"
        f"    main(['--home', {str(home)!r}, 'enter', '--card', {codes[0]!r}])\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "print(json.dumps([m for m in ('lightgbm', 'numpy', 'scipy', 'anoncard.fit') if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
