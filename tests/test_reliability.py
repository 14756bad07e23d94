"""Terminal processes on one home, each with its own Service: retried requests count once, balances are
exact, no error of any kind reaches a terminal, and a single-use coupon is used once under a race."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import random
import subprocess
import sys
import threading
import time
import traceback
from datetime import date, timedelta
from pathlib import Path

from anoncard import Programme, Service
from anoncard import coupons as coupon_codes
from anoncard.errors import CouponError, LedgerError
from anoncard.money import parse_cents
from tests.conftest import basket, clock_at, fixed_clock, on
from tests.test_crash import consistency_problems

STRESS = os.environ.get("ANONCARD_STRESS") == "1"
# PostgreSQL takes writers in parallel (row locks per card): eight terminal processes there
PROCESSES = 8 if os.environ.get("ANONCARD_TEST_BACKEND") == "postgres" else 4
RACERS = 8 if os.environ.get("ANONCARD_TEST_BACKEND") == "postgres" else 2  # processes presenting one coupon
CHECKOUTS = 500 if STRESS else 60  # per process
SHARED = 50 if STRESS else 12  # requests every process sends: a till failing over to another
CARDS = 20
MIXED_OPS = 500 if STRESS else 60  # per process
MIXED_CARDS = CARDS  # shared by every terminal
COUPON_TRIALS = 200 if STRESS else 40
CLI_CHECKOUTS = 60 if STRESS else 5  # per terminal, in the test that mixes CLI, serve and library terminals
DAY = date(2015, 3, 2)
CATEGORIES = ("dairy", "fruit", "coffee", "bakery", "wine", "vegetables")
PROGRAMME = Programme.default()
CTX = multiprocessing.get_context("fork")


def random_lines(rng: random.Random, low: int = 0, high: int = 30) -> list[dict]:
    return [
        {"category": c, "amount": f"{rng.randint(low, high)}.{rng.randint(1, 99):02d}"}
        for c in rng.sample(CATEGORIES, rng.randint(1, 3))
    ]


def points_of(lines: list[dict]) -> int:
    return PROGRAMME.points_for([(ln["category"], parse_cents(ln["amount"], "amount")) for ln in lines])


def shared_request(codes: list[str], j: int) -> dict:
    """The same content in every process (string seeds do not depend on the process)."""
    rng = random.Random(f"shared/{j}")
    return {"card": rng.choice(codes), "txn": f"shared-{j}", "lines": random_lines(rng)}


def run_terminals(target, home: Path, args: tuple, out_dir: Path, n: int = PROCESSES) -> list[dict]:
    """Start ``n`` forked terminal processes, wait for them, return what each wrote to its result file."""
    paths = [out_dir / f"terminal-{w}.json" for w in range(n)]
    barrier = CTX.Barrier(n)
    procs = [CTX.Process(target=target, args=(str(home), w, barrier, *args, str(paths[w]))) for w in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
    assert [p.exitcode for p in procs] == [0] * n
    results = [json.loads(p.read_text()) for p in paths]
    assert [r["errors"] for r in results] == [[]] * n  # not one "database is locked", nor anything else
    # the terminals did run at the same time: each started before any other had finished
    assert max(r["span"][0] for r in results) < min(r["span"][1] for r in results)
    return results


def _send(svc: Service, request: dict, log: list) -> None:
    r = svc.checkout(request)
    log.append([request["txn"], request["card"], r.points, r.balance, r.replayed])


def checkout_terminal(home: str, worker: int, barrier, codes: list[str], out: str) -> None:
    """Own checkouts plus the shared ones in a seeded order; each sent once, then 0-2 retries,
    some at once and some later in the stream. Records every receipt and every exception."""
    rng = random.Random(100 + worker)
    plan = [{"card": rng.choice(codes), "txn": f"w{worker}-{i}", "lines": random_lines(rng)} for i in range(CHECKOUTS)]
    for j in range(SHARED):
        plan.insert(rng.randrange(len(plan) + 1), shared_request(codes, j))
    log: list = []
    errors: list[str] = []
    span = [0.0, 0.0]
    try:
        with Service.open(home, clock=fixed_clock) as svc:
            barrier.wait(timeout=60)
            span[0] = time.monotonic()
            later: list[dict] = []
            for request in plan:
                _send(svc, request, log)
                for _retry in range(rng.choice([0, 0, 1, 2])):
                    if rng.random() < 0.5:
                        _send(svc, request, log)
                    else:
                        later.append(request)
                while later and rng.random() < 0.3:
                    again = later.pop(rng.randrange(len(later)))
                    _send(svc, again, log)
            for again in later:
                _send(svc, again, log)
            span[1] = time.monotonic()
    except BaseException:  # noqa: BLE001 - any exception at all is what this test looks for
        errors.append(traceback.format_exc())
    Path(out).write_text(json.dumps({"log": log, "errors": errors, "plan": plan, "span": span}))


def test_four_terminals_with_retries_count_every_checkout_once(home, tmp_path):
    with Service.open(home, clock=fixed_clock) as svc:
        codes = [s.code for s in svc.issue_cards({"count": CARDS})]
    results = run_terminals(checkout_terminal, home, (codes,), tmp_path)

    requests = {}
    for r in results:
        for request in r["plan"]:
            assert requests.setdefault(request["txn"], request) == request  # shared ones: the same everywhere
    assert len(requests) == PROCESSES * CHECKOUTS + SHARED
    receipts: dict[str, list] = {}
    for r in results:
        assert {txn for txn, *_ in r["log"]} == {q["txn"] for q in r["plan"]}  # every request got a receipt
        assert len(r["log"]) > len(r["plan"])  # and there were retries
        own: set[str] = set()
        for txn, card, points, balance, replayed in r["log"]:
            assert card == requests[txn]["card"]
            assert points == points_of(requests[txn]["lines"]), txn
            if txn in own:  # in one process, every retry is a replay
                assert replayed, txn
            elif not txn.startswith("shared-"):  # and its own first send counts (a shared one may have been sent)
                assert not replayed, txn
            own.add(txn)
            receipts.setdefault(txn, []).append((points, balance, replayed))
    for txn, rs in receipts.items():
        assert [replayed for _p, _b, replayed in rs].count(False) == 1, txn  # exactly one send counted
        assert len({(p, b) for p, b, _r in rs}) == 1, txn  # every retry got the original receipt

    expected = dict.fromkeys(codes, 0)
    for txn, request in requests.items():
        first = next(points for points, _b, replayed in receipts[txn] if not replayed)
        expected[request["card"]] += first
    with Service.open(home, clock=fixed_clock) as svc:
        assert {c: svc.balance({"card": c}).points for c in codes} == expected
        counts = svc.store.counts()
    assert counts["txns"] == len(requests)  # zero duplicated documents
    assert counts["ledger"] == len(requests)
    assert consistency_problems(home / "anoncard.db") == []


# -- checkouts, partial and full refunds and redemptions, all at once ---------------------------------


def mixed_terminal(home: str, worker: int, barrier, codes: list[str], out: str) -> None:
    """Checkouts on shared cards; refunds (partial and full) of this terminal's own checkouts;
    redemptions of "coffee" (150 points) that may be refused for lack of points. Every request that
    succeeded is retried 0-2 times, at once or later. Records receipts, refusals and exceptions."""
    rng = random.Random(500 + worker)
    log: list = []  # [op, txn-key, card, points, balance, replayed]
    refused: list[str] = []
    errors: list[str] = []
    checkouts: dict[str, dict] = {}  # txn -> {"card", "lines": {cat: cents}, "left": {cat: cents}}
    later: list[tuple] = []
    span = [0.0, 0.0]

    def send(svc: Service, op: str, key: str, card: str, request: dict) -> bool:
        try:
            r = getattr(svc, op)(request)
        except LedgerError as exc:
            if op == "redeem" and exc.field == "reward":  # not enough points: a refusal, not an error
                refused.append(key)
                return False
            raise
        log.append([op, key, card, r.points, r.balance, r.replayed])
        return True

    try:
        with Service.open(home, clock=fixed_clock) as svc:
            barrier.wait(timeout=60)
            span[0] = time.monotonic()
            for i in range(MIXED_OPS):
                roll = rng.random()
                open_ = [t for t, c in checkouts.items() if any(c["left"].values())]
                if roll < 0.5 or not open_:
                    txn = f"w{worker}-c{i}"
                    lines = random_lines(rng, 2, 40)
                    card = rng.choice(codes)
                    request = {"card": card, "txn": txn, "lines": lines}
                    per_cat: dict[str, int] = {}
                    for ln in lines:
                        per_cat[ln["category"]] = per_cat.get(ln["category"], 0) + parse_cents(ln["amount"], "a")
                    checkouts[txn] = {"card": card, "lines": dict(per_cat), "left": dict(per_cat)}
                    op, key = "checkout", txn
                elif roll < 0.7:
                    txn = rng.choice(open_)
                    left = checkouts[txn]["left"]
                    cat = rng.choice([c for c, v in left.items() if v])
                    cents = rng.randint(1, left[cat])
                    left[cat] -= cents
                    key = f"{txn}-r{i}"
                    amount = f"{cents // 100}.{cents % 100:02d}"
                    request = {"txn": txn, "refund_id": key, "lines": [{"category": cat, "amount": amount}]}
                    op, card = "refund", checkouts[txn]["card"]
                elif roll < 0.8:
                    txn = rng.choice(open_)
                    checkouts[txn]["left"] = dict.fromkeys(checkouts[txn]["left"], 0)
                    request, op, key, card = {"txn": txn}, "refund", f"{txn}#full", checkouts[txn]["card"]
                else:
                    card = rng.choice(codes)
                    key = f"w{worker}-x{i}"
                    request, op = {"card": card, "txn": key, "reward": "coffee"}, "redeem"
                if send(svc, op, key, card, request):
                    for _retry in range(rng.choice([0, 0, 1, 2])):
                        if rng.random() < 0.5:
                            send(svc, op, key, card, request)
                        else:
                            later.append((op, key, card, request))
                while later and rng.random() < 0.3:
                    send(svc, *later.pop(rng.randrange(len(later))))
            for item in later:
                send(svc, *item)
            span[1] = time.monotonic()
    except BaseException:  # noqa: BLE001 - any exception at all is what this test looks for
        errors.append(traceback.format_exc())
    Path(out).write_text(
        json.dumps({"log": log, "refused": refused, "errors": errors, "checkouts": checkouts, "span": span})
    )


def test_checkouts_refunds_and_redemptions_at_once(home, tmp_path):
    with Service.open(home, clock=fixed_clock) as svc:
        codes = [s.code for s in svc.issue_cards({"count": MIXED_CARDS})]
    results = run_terminals(mixed_terminal, home, (codes,), tmp_path)

    first: dict[str, tuple] = {}  # key -> (op, card, points, balance) of the send that counted
    for r in results:
        for op, key, card, points, balance, replayed in r["log"]:
            if key in first:
                assert replayed and (op, card, points, balance) == first[key], key  # the original receipt
            else:
                assert not replayed, key
                first[key] = (op, card, points, balance)
        assert not set(r["refused"]) & set(first)  # refused redemptions were not retried
    redeemed = [v for v in first.values() if v[0] == "redeem"]
    assert redeemed and all(balance >= 0 for _op, _c, _p, balance in redeemed)  # never spent points it lacked
    assert sum(len(r["refused"]) for r in results) > 0  # some redemptions were refused: the check was exercised

    expected = dict.fromkeys(codes, 0)
    for _op, card, points, _balance in first.values():
        expected[card] += points
    for r in results:  # each checkout nets what its remaining lines earn, whatever the refunds' order
        for txn, c in r["checkouts"].items():
            refunds = [p for k, (op, _c, p, _b) in first.items() if op == "refund" and k.startswith(f"{txn}-r")]
            refunds += [first[f"{txn}#full"][2]] if f"{txn}#full" in first else []
            total = sum(PROGRAMME.weight(cat, cents) for cat, cents in c["lines"].items())
            left = sum(PROGRAMME.weight(cat, cents) for cat, cents in c["left"].items())
            earned = first[txn][2]
            assert earned + sum(refunds) == earned * left // total, txn
    assert any(op == "refund" for op, *_ in first.values())
    with Service.open(home, clock=fixed_clock) as svc:
        assert {c: svc.balance({"card": c}).points for c in codes} == expected
        counts = svc.store.counts()
    assert counts["txns"] == counts["ledger"] == len(first)
    assert consistency_problems(home / "anoncard.db") == []


# -- two processes present the same single-use coupon ----------------------------------------------------

LINES = basket(("dairy", "3.00"), ("coffee", "6.50"), ("fruit", "2.00"), ("bakery", "1.50"))


def present_coupon(home: str, code: str, coupon: str, txn: str, day: date, barrier, out) -> None:
    try:
        svc = Service.open(home, clock=clock_at(day))
    except BaseException as exc:  # noqa: BLE001
        barrier.abort()
        out.put(f"open failed: {exc!r}")
        return
    try:
        barrier.wait(timeout=30)  # both are open: present the coupon at the same moment
        svc.checkout({"card": code, "txn": txn, "lines": LINES, "coupons": [coupon]})
        out.put("ok")
    except CouponError as exc:
        out.put("refused" if "already used" in exc.message else f"CouponError: {exc.message}")
    except BaseException as exc:  # noqa: BLE001
        out.put(f"{type(exc).__name__}: {exc}")
    finally:
        svc.close()


def test_processes_presenting_one_coupon_at_once_exactly_one_wins(home):
    """Two processes on SQLite, eight on PostgreSQL."""
    with Service.open(home, clock=fixed_clock) as svc:
        (code,) = (s.code for s in svc.issue_cards({"count": 1}))
        for i in range(4):
            on(svc, DAY - timedelta(days=10 - i)).checkout({"card": code, "txn": f"h{i}", "lines": LINES})
        svc.refresh_stats()
    wanted = {ln["category"] for ln in LINES}
    outcomes, coupons = [], []
    for trial in range(COUPON_TRIALS):
        day = DAY + timedelta(days=7 * trial)  # a week apart: the weekly cap is never what refuses
        with Service.open(home, clock=clock_at(day)) as svc:  # closed before forking
            coupon = next(c for c in svc.enter({"card": code}).coupons if c.category in wanted)
        coupons.append(coupon.code)
        barrier, out = CTX.Barrier(RACERS), CTX.Queue()
        procs = [
            CTX.Process(
                target=present_coupon, args=(str(home), code, coupon.code, f"race{trial}-{p}", day, barrier, out)
            )
            for p in range(RACERS)
        ]
        for p in procs:
            p.start()
        outcomes.append(sorted(out.get(timeout=60) for _ in procs))
        for p in procs:
            p.join(timeout=60)
    assert outcomes == [["ok"] + ["refused"] * (RACERS - 1)] * COUPON_TRIALS

    with Service.open(home, clock=fixed_clock) as svc:
        key = svc.ring.coupon_public_key()
        for trial, coupon in enumerate(coupons):
            docs = [svc.store.find_document(svc.ring.reference("checkout", f"race{trial}-{p}")) for p in range(RACERS)]
            stored = [d for d in docs if d is not None]
            assert len(stored) == 1, trial  # the loser left no document behind
            row = svc.store.find_coupon(svc.ring.coupon_digest(coupon_codes.verify(coupon, key).id))
            assert row.redeemed_txn == stored[0].id, trial  # used by the winner's document
        assert svc.store.counts()["txns"] == 4 + COUPON_TRIALS
    assert consistency_problems(home / "anoncard.db") == []


# -- one-shot CLI calls, a serve process and the library on one home -----------------------------------


def _cli_checkout(home: str, request: dict) -> dict:
    """One ``anoncard checkout --input - --json`` process, as a till script runs it (the card code on stdin)."""
    proc = subprocess.run(
        [sys.executable, "-m", "anoncard", "--home", home, "checkout", "--input", "-", "--json"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0 or proc.stderr:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


class _Serve:
    """A long-lived ``anoncard serve`` terminal: one request line in, one response line out."""

    def __init__(self, home: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "anoncard", "--home", home, "serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def checkout(self, request: dict) -> dict:
        self.proc.stdin.write(json.dumps({"op": "checkout", **request}) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        if not answer.get("ok"):
            raise AssertionError(f"serve answered {answer}")
        return answer["result"]

    def close(self) -> str:
        _out, err = self.proc.communicate(timeout=60)
        if self.proc.returncode != 0 or err:
            raise AssertionError(f"serve exit {self.proc.returncode}: {err.strip()}")
        return err


def mixed_kind_terminal(kind: str, home: str, worker: int, codes: list[str], barrier, out: list) -> None:
    """Own checkouts plus the shared ones, each retried 0-2 times at once or later, through one kind of
    terminal: one CLI process per request, one serve process, or the library in this process."""
    rng = random.Random(900 + worker)
    plan = [{"card": rng.choice(codes), "txn": f"{kind}{worker}-{i}", "lines": random_lines(rng)}
            for i in range(CLI_CHECKOUTS)]  # fmt: skip
    for j in range(3):
        plan.insert(rng.randrange(len(plan) + 1), shared_request(codes, 1000 + j))
    log, errors = [], []
    try:
        if kind == "serve":
            terminal = _Serve(home)
            send = terminal.checkout
        elif kind == "library":
            terminal = Service.open(home)
            send = lambda request: dataclasses.asdict(terminal.checkout(request))  # noqa: E731
        else:
            terminal = None
            send = lambda request: _cli_checkout(home, request)  # noqa: E731
        barrier.wait(timeout=60)
        later: list[dict] = []
        for request in plan:
            for _send in range(1 + rng.choice([0, 0, 1, 2])):
                if _send and rng.random() < 0.5:
                    later.append(request)
                    continue
                r = send(request)
                log.append([request["txn"], request["card"], r["points"], r["balance"], r["replayed"]])
        for request in later:
            r = send(request)
            log.append([request["txn"], request["card"], r["points"], r["balance"], r["replayed"]])
        if terminal is not None:
            terminal.close()
    except BaseException:  # noqa: BLE001 - any exception at all is what this test looks for
        errors.append(traceback.format_exc())
    out.append({"log": log, "errors": errors, "plan": plan})


def test_cli_serve_and_library_terminals_share_one_home(home):
    """Two tills call the CLI once per checkout, one keeps a serve process, one uses the library: no error
    reaches any of them, retries are replays with the original receipt, every balance is exact."""
    with Service.open(home, clock=fixed_clock) as svc:
        codes = [s.code for s in svc.issue_cards({"count": CARDS})]
    kinds = ["cli", "cli", "serve", "library"]
    barrier, results = threading.Barrier(len(kinds)), []
    threads = [
        threading.Thread(target=mixed_kind_terminal, args=(kind, str(home), w, codes, barrier, results))
        for w, kind in enumerate(kinds)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert len(results) == len(kinds)
    assert [r["errors"] for r in results] == [[]] * len(kinds)  # no "database is locked", nor anything else

    requests = {q["txn"]: q for r in results for q in r["plan"]}
    receipts: dict[str, list] = {}
    for r in results:
        assert {txn for txn, *_ in r["log"]} == {q["txn"] for q in r["plan"]}
        for txn, card, points, balance, replayed in r["log"]:
            assert card == requests[txn]["card"] and points == points_of(requests[txn]["lines"]), txn
            receipts.setdefault(txn, []).append((points, balance, replayed))
    assert sum(len(rs) for rs in receipts.values()) > len(requests)  # there were retries
    expected = dict.fromkeys(codes, 0)
    for txn, rs in receipts.items():
        assert [replayed for *_pb, replayed in rs].count(False) == 1, txn  # exactly one send counted
        assert len({(p, b) for p, b, _r in rs}) == 1, txn  # every retry got the original receipt
        expected[requests[txn]["card"]] += rs[0][0]
    with Service.open(home, clock=fixed_clock) as svc:
        assert {c: svc.balance({"card": c}).points for c in codes} == expected
        assert svc.store.counts()["txns"] == len(requests)
    assert consistency_problems(home / "anoncard.db") == []
