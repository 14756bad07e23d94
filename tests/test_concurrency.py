"""Many terminal processes on one home: retries count once, balances exact, no lock error surfaces."""

from __future__ import annotations

import multiprocessing
import os
import random

from anoncard import Service
from tests.conftest import basket

STRESS = os.environ.get("ANONCARD_STRESS") == "1"
PROCESSES = 4
CHECKOUTS = 500 if STRESS else 60


def terminal(home: str, codes: list[str], worker: int, out) -> None:
    rng = random.Random(worker)
    receipts, errors = [], []
    try:
        with Service.open(home) as svc:
            for i in range(CHECKOUTS):
                request = {
                    "card": rng.choice(codes),
                    "txn": f"w{worker}-{i}",
                    "lines": basket(("dairy", f"{rng.randint(1, 20)}.{rng.randint(0, 99):02d}"),
                                    ("coffee", f"{rng.randint(1, 9)}.99")),
                }  # fmt: skip
                for _attempt in range(1 + rng.choice([0, 0, 1, 2])):  # the till retries at random
                    r = svc.checkout(request)
                    receipts.append((request["card"], request["txn"], r.points, r.replayed))
    except Exception as exc:  # noqa: BLE001 - any error at all is what this test looks for
        errors.append(f"{type(exc).__name__}: {exc}")
    out.put((receipts, errors))


def test_terminals_in_parallel_with_retries(home):
    with Service.open(home) as svc:
        codes = [s.code for s in svc.issue_cards({"count": 20})]
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=terminal, args=(str(home), codes, w, out)) for w in range(PROCESSES)]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join()
    errors = [e for _r, errs in results for e in errs]
    assert errors == []  # not one "database is locked" reached a terminal
    receipts = [r for rs, _e in results for r in rs]
    first = {}
    for card, txn, points, replayed in receipts:
        if txn in first:
            assert replayed and points == first[txn][1]  # a retry gets the original receipt
        else:
            assert not replayed
            first[txn] = (card, points)
    assert len(first) == PROCESSES * CHECKOUTS
    expected = dict.fromkeys(codes, 0)
    for card, points in first.values():
        expected[card] += points
    with Service.open(home) as svc:
        assert {c: svc.balance({"card": c}).points for c in codes} == expected
        assert svc.store.counts()["txns"] == len(first)  # zero duplicated documents
        assert svc.store.integrity_check() == ["ok"]
