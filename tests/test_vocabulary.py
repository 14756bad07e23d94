"""The closed category vocabulary: only declared categories pass the gate; sensitive ones earn
points but never enter a card's rows."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anoncard import PolicyViolation, ProgrammeError, Service, audit
from anoncard.demo import CATEGORIES as DEMO_CATEGORIES
from anoncard.programme import DEFAULT_TOML, Programme
from anoncard.storage import database_url
from anoncard.store import SCHEMA_VERSION
from anoncard.vocabulary import PRIVATE_LABEL, normalise
from tests.cli_helpers import db_digest as digest
from tests.cli_helpers import db_files as files
from tests.cli_helpers import dump
from tests.conftest import DAY, basket, fixed_clock

SENSITIVE = ["pharmacy", "baby food", "nappies", "pregnancy tests", "kosher", "halal", "condoms & sexual health",
             "nicotine replacement", "infant formula"]  # fmt: skip


@pytest.fixture
def shop(home):
    svc = Service.open(home, clock=fixed_clock, synchronous="NORMAL")
    (card,) = svc.issue_cards({"count": 1})
    svc.checkout({"card": card.code, "txn": "t0", "lines": basket(("dairy", "3.49"))})
    svc.store.checkpoint()
    yield svc, card.code
    svc.close()


# -- the default vocabulary ------------------------------------------------------------------------


def test_the_default_programme_ships_a_grocery_vocabulary_with_sensitive_categories():
    vocabulary = Programme.default().vocabulary
    assert len(vocabulary) >= 50
    assert len({c.department for c in vocabulary.categories.values()}) >= 8
    assert set(SENSITIVE) <= vocabulary.sensitive
    assert {"dairy", "coffee", "wine", "fruit", "soft drinks"} <= set(vocabulary.categories)
    assert not vocabulary.categories["dairy"].sensitive


def test_every_category_the_demo_and_the_tests_send_is_declared():
    from tests.crash_stream import CATEGORIES as CRASH
    from tests.test_ledger import CATEGORIES as LEDGER
    from tests.test_reliability import CATEGORIES as RELIABILITY

    declared = Programme.default().vocabulary.categories
    for name in [*DEMO_CATEGORIES, *CRASH, *LEDGER, *RELIABILITY]:
        assert name in declared, name


def test_lookup_normalises_nfkc_case_and_white_space():
    vocabulary = Programme.default().vocabulary
    assert vocabulary.lookup("  Soft \t  DRINKS ").name == "soft drinks"
    assert vocabulary.lookup("ＤＡＩＲＹ").name == "dairy"  # full-width letters
    assert vocabulary.lookup("\u212aosher").name == "kosher"  # Kelvin sign for K
    assert vocabulary.lookup("d\u0430iry") is None  # a Cyrillic a is another word, not declared
    assert normalise("Stra\u00dfe") == "strasse"


# -- the gate ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "category",
    ["quinoa", "erika@example.de", "S\u212a3112000000198742637541", "01-02-1980", "dаiry", "(private)", "*", ""],
)
def test_an_undeclared_category_is_refused_by_name_and_nothing_is_stored(home, shop, category):
    svc, code = shop
    before = digest(home)
    request = {"card": code, "txn": "t1", "lines": basket(("dairy", "1.00"), ("coffee", "2.00"), (category, "1.00"))}
    with pytest.raises(PolicyViolation) as info:
        svc.checkout(request)
    assert str(info.value) == "field 'lines[2].category': not a category this programme declares"
    assert info.value.field == "lines[2].category"
    assert digest(home) == before


def test_a_refund_line_with_an_undeclared_category_is_refused(shop):
    svc, _code = shop
    with pytest.raises(PolicyViolation, match=r"'lines\[0\].category': not a category"):
        svc.refund({"txn": "t0", "refund_id": "r1", "lines": basket(("caviar", "1.00"))})


def test_the_kelvin_sign_iban_is_not_stored_as_a_slovak_iban(home, shop):
    """On the base commit the category was lower-cased after the scan: 'sk31...' was stored."""
    svc, code = shop
    with pytest.raises(PolicyViolation):
        svc.checkout({"card": code, "txn": "t1", "lines": basket(("S\u212a3112000000198742637541", "1.00"))})
    assert b"sk3112000000198742637541" not in files(home)


def test_the_gate_uses_the_programme_it_is_given(shop):
    svc, code = shop
    small = Programme.from_toml(DEFAULT_TOML.split("[categories]")[0] + '[categories]\nfruit = { department = "p" }\n'
                                'vegetables = { department = "p" }\ncoffee = { department = "g" }\n'
                                'wine = { department = "d" }\n')  # fmt: skip
    request = {"card": code, "txn": "t9", "lines": basket(("dairy", "1.00"))}
    svc.policy.validate("checkout", request)  # the default programme declares dairy
    with pytest.raises(PolicyViolation, match="not a category"):
        svc.policy.validate("checkout", request, categories=small.vocabulary)


# -- programme validation ---------------------------------------------------------------------------

HEAD = DEFAULT_TOML.split("[categories]")[0]
BASE = 'fruit = { department = "produce" }\nvegetables = { department = "produce" }\n' \
       'coffee = { department = "grocery" }\nwine = { department = "drinks" }\n'  # fmt: skip


@pytest.mark.parametrize(
    "vocabulary, rule",
    [
        ("", "[categories] is missing"),
        ("[departments]\ndairy = \"fresh\"\n[categories]\n" + BASE, "[departments] is now part of [categories]"),
        ("[categories]\n" + BASE + 'Dairy = { department = "fresh" }\n', "categories entry #5: a category name"),
        ("[categories]\n" + BASE + '"soft  drinks" = { department = "drinks" }\n', "normal form"),
        ("[categories]\n" + BASE + 'dairy = "fresh"\n', "categories.dairy: must be a table"),
        ("[categories]\n" + BASE + 'dairy = { department = "" }\n', "categories.dairy.department"),
        ("[categories]\n" + BASE + 'dairy = { department = "fresh", flags = ["secret"] }\n', "flags: must be"),
        ("[categories]\n" + BASE + 'dairy = { department = "fresh", aisle = 3 }\n', "only department and flags"),
        ("[categories]\n" + BASE + '"erika@example.de" = { department = "x" }\n', "categories entry #5"),
        ("[categories]\n" + BASE.replace("coffee", "tea"), "offers: names a category that [categories] does not"),
        ("[categories]\n" + BASE.replace('"produce" }\nveg', '"produce", flags = ["sensitive"] }\nveg'),
         "earn.category_multipliers.fruit: a sensitive category gets no multiplier"),
    ],
)  # fmt: skip
def test_a_malformed_vocabulary_is_refused_naming_the_entry(vocabulary, rule):
    with pytest.raises(ProgrammeError) as info:
        Programme.from_toml(HEAD + vocabulary)
    assert rule in str(info.value)
    assert "erika" not in str(info.value)


# -- sensitive categories ---------------------------------------------------------------------------


def test_a_sensitive_line_earns_points_but_no_card_row_names_it(home, shop):
    svc, code = shop
    plain = svc.checkout({"card": code, "txn": "p1", "lines": basket(("dairy", "20.00"), ("tea", "9.99"))})
    receipt = svc.checkout(
        {"card": code, "txn": "s1", "lines": basket(("dairy", "20.00"), ("Pregnancy  Tests", "9.99"))}
    )
    assert receipt.points == plain.points == 29 and receipt.spend == "29.99"
    conn = svc.store.conn
    assert conn.execute("SELECT count(*) FROM history WHERE category LIKE 'preg%'").fetchone()[0] == 0
    (lines,) = conn.execute("SELECT lines FROM txns WHERE id = (SELECT max(id) FROM txns)").fetchone()
    assert lines == f'[["{PRIVATE_LABEL}",999,100,0,0],["dairy",2000,100,0,0]]'
    svc.store.checkpoint()
    # store-wide, by week, with no card
    assert conn.execute("SELECT * FROM category_weeks").fetchall() == [("2015-03-02", "pregnancy tests", 999, 1)]
    assert svc.store.schema()["category_weeks"] == ["week", "category", "spend_cents", "baskets"]
    if database_url(home) is None:
        assert files(home).count(b"pregnancy tests") == 1  # the weekly total's one row, nothing tied to a card
    else:  # PostgreSQL's files are the server's: its logical content holds the one row
        assert sum(row.count("pregnancy tests") for row in dump(home)) == 1


def test_a_sensitive_line_can_be_refunded_in_part_and_in_full(shop):
    svc, code = shop
    checkout = svc.checkout({"card": code, "txn": "s1", "lines": basket(("nappies", "12.00"), ("dairy", "8.00"))})
    assert checkout.points == 20
    part = svc.refund({"txn": "s1", "refund_id": "r1", "lines": basket(("nappies", "12.00"))})
    assert part.points == -12
    with pytest.raises(Exception, match="exceeds"):
        svc.refund({"txn": "s1", "refund_id": "r2", "lines": basket(("kosher", "0.01"))})
    rest = svc.refund({"txn": "s1"})
    assert rest.points == -8 and rest.spend == "-8.00"


def test_a_sensitive_category_is_never_suggested_even_from_old_history(shop):
    """History written before a category was flagged sensitive is never turned into a coupon."""
    svc, code = shop
    conn = svc.store.conn
    for day in range(1, 25):
        conn.execute("INSERT INTO history VALUES (1, ?, 'baby food', 500, 1)", (f"2015-02-{day:02d}",))
        conn.execute("INSERT INTO visits VALUES (1, ?, 1, 500) ON CONFLICT DO NOTHING", (f"2015-02-{day:02d}",))
    svc.refresh_stats()
    coupons = svc.enter({"card": code}).coupons
    assert coupons and all(c.category != "baby food" for c in coupons)


def test_the_audit_fails_when_a_cards_row_names_a_sensitive_category(home, shop):
    svc, code = shop
    assert audit.run(home, today=DAY).passed
    svc.store.conn.execute("INSERT INTO history VALUES (1, '2015-03-01', 'pharmacy', 500, 1)")
    result = audit.run(home, today=DAY)
    check = next(c for c in result.checks if c.key == "c")
    assert not check.passed
    assert check.details == ["history.category: a card's row names a category the programme flags sensitive"]


@pytest.mark.sqlite_only(reason="migrates an older SQLite file")
def test_a_schema_2_database_gains_the_weekly_totals(home, shop):
    svc, code = shop
    svc.close()
    conn = sqlite3.connect(home / "anoncard.db")
    conn.executescript("DROP TABLE category_weeks; PRAGMA user_version = 2;")
    conn.close()
    with Service.open(home, clock=fixed_clock, synchronous="NORMAL") as again:
        assert again.store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        again.checkout({"card": code, "txn": "s1", "lines": basket(("halal", "4.00"))})
        assert again.store.conn.execute("SELECT category FROM category_weeks").fetchall() == [("halal",)]


# -- properties of the lookup -------------------------------------------------------------------------

DECLARED = sorted(Programme.default().vocabulary.categories)


def _respell(name: str, data) -> str:
    """A spelling of ``name`` a till might send: any case, full-width letters, extra white space."""
    out = []
    for ch in name:
        if ch == " ":
            out.append(data.draw(st.sampled_from([" ", "  ", "\t", " \u3000"])))
        elif ch.isalpha() and data.draw(st.booleans()):
            out.append(chr(ord(ch.upper()) - 0x41 + 0xFF21))  # full-width capital
        else:
            out.append(ch.upper() if data.draw(st.booleans()) else ch)
    return data.draw(st.sampled_from(["", " ", "\t"])) + "".join(out) + data.draw(st.sampled_from(["", " "]))


@given(name=st.sampled_from(DECLARED), data=st.data())
def test_any_spelling_of_a_declared_category_is_that_category(name, data):
    assert Programme.default().vocabulary.lookup(_respell(name, data)).name == name


@given(text=st.text(max_size=60))
def test_anything_else_is_refused_unseen(text):
    vocabulary = Programme.default().vocabulary
    found = vocabulary.lookup(text)
    assert (found is not None) == (normalise(text) in vocabulary.categories)


def test_the_lookup_cache_is_bounded():
    vocabulary = Programme.from_toml(DEFAULT_TOML).vocabulary
    for i in range(10_000):
        vocabulary.lookup(f"not declared {i}")
    assert len(vocabulary._seen) <= 4096
    assert vocabulary.lookup("Dairy").name == "dairy"
