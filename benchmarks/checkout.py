"""Checkout throughput: the library next to a plain sqlite3 loop, same run, same durability.

Both sides use existing cards, 5-line baskets, WAL and one commit per checkout. The raw
loop does the minimal writes a checkout needs (token look-up, a ledger row, five history
upserts, commit); the library adds the gate, idempotency, the receipt and visits.

    python benchmarks/checkout.py [--n 2000] [--rounds 5] [--synchronous NORMAL|FULL] [--json PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from anoncard import Service, init_home  # noqa: E402
from benchmarks.common import on, write_json  # noqa: E402

CATEGORIES = ["dairy", "bakery", "fruit", "vegetables", "meat", "coffee", "beverages", "frozen", "snacks", "household"]


def baskets(n: int, codes: list[str], seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [
        {
            "card": rng.choice(codes),
            "txn": f"bench-{seed}-{i}",
            "lines": [
                {"category": c, "amount": f"{rng.randint(50, 1500) / 100:.2f}"} for c in rng.sample(CATEGORIES, 5)
            ],
        }
        for i in range(n)
    ]


def run_library(home: Path, requests: list[dict], synchronous: str) -> float:
    with Service.open(home, synchronous=synchronous) as svc:
        day = date(2015, 3, 2)
        t0 = time.perf_counter()
        for r in requests:
            on(svc, day).checkout(r)
        return len(requests) / (time.perf_counter() - t0)


def raw_setup(path: Path, cards: int) -> list[bytes]:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(
        """
        CREATE TABLE cards (id INTEGER PRIMARY KEY, token BLOB NOT NULL UNIQUE);
        CREATE TABLE ledger (id INTEGER PRIMARY KEY, card_id INTEGER NOT NULL, points INTEGER NOT NULL, day TEXT);
        CREATE INDEX ledger_card ON ledger(card_id);
        CREATE TABLE history (card_id INTEGER, day TEXT, category TEXT, spend_cents INTEGER, baskets INTEGER,
                              PRIMARY KEY (card_id, day, category));
        """
    )
    secrets_ = [random.randbytes(17) for _ in range(cards)]
    key = b"k" * 32
    conn.executemany(
        "INSERT INTO cards (token) VALUES (?)", [(hmac.new(key, s, hashlib.sha256).digest(),) for s in secrets_]
    )
    conn.close()
    return secrets_


def run_raw(path: Path, secrets_: list[bytes], n: int, synchronous: str, seed: int) -> float:
    rng = random.Random(seed)
    key = b"k" * 32
    work = [(rng.choice(secrets_), [(c, rng.randint(50, 1500)) for c in rng.sample(CATEGORIES, 5)]) for _ in range(n)]
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA synchronous={synchronous}")
    t0 = time.perf_counter()
    for secret, lines in work:
        token = hmac.new(key, secret, hashlib.sha256).digest()
        conn.execute("BEGIN IMMEDIATE")
        (card_id,) = conn.execute("SELECT id FROM cards WHERE token = ?", (token,)).fetchone()
        conn.execute(
            "INSERT INTO ledger (card_id, points, day) VALUES (?, ?, ?)",
            (card_id, sum(a for _, a in lines) // 100, "2015-03-02"),
        )
        conn.executemany(
            "INSERT INTO history VALUES (?, ?, ?, ?, 1) ON CONFLICT(card_id, day, category) DO UPDATE SET"
            " spend_cents = spend_cents + excluded.spend_cents, baskets = baskets + 1",
            [(card_id, "2015-03-02", c, a) for c, a in lines],
        )
        conn.execute("COMMIT")
    rate = n / (time.perf_counter() - t0)
    conn.close()
    return rate


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="checkouts per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cards", type=int, default=1000)
    ap.add_argument("--synchronous", choices=["NORMAL", "FULL"], default="NORMAL")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    lib_rates, raw_rates = [], []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        init_home(home)
        with Service.open(home) as svc:
            codes = [s.code for s in svc.issue_cards({"count": args.cards})]
        raw_path = Path(tmp) / "raw.db"
        raw_secrets = raw_setup(raw_path, args.cards)
        for r in range(args.rounds):  # interleaved, so both sides see the same machine noise
            lib_rates.append(run_library(home, baskets(args.n, codes, seed=r), args.synchronous))
            raw_rates.append(run_raw(raw_path, raw_secrets, args.n, args.synchronous, seed=r))
    lib, raw = statistics.median(lib_rates), statistics.median(raw_rates)
    result = {
        "benchmark": "checkout",
        "synchronous": args.synchronous,
        "checkouts_per_round": args.n,
        "rounds": args.rounds,
        "library_checkouts_per_s_median": round(lib),
        "raw_sqlite_checkouts_per_s_median": round(raw),
        "ratio_library_to_raw": round(lib / raw, 3),
        "library_rounds": [round(x) for x in lib_rates],
        "raw_rounds": [round(x) for x in raw_rates],
    }
    print(
        f"checkout, 5-line baskets, WAL, synchronous={args.synchronous}, {args.rounds} rounds x {args.n}:\n"
        f"  library  {lib:8.0f} checkouts/s (median)\n"
        f"  raw      {raw:8.0f} checkouts/s (median)\n"
        f"  ratio    {lib / raw:8.3f}"
    )
    return write_json(args.json, result)


if __name__ == "__main__":
    main()
