"""kill -9 in the middle of a checkout stream: never half applied, retries count once."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from anoncard import Programme, Service
from tests.stream_checkouts import request

STRESS = os.environ.get("ANONCARD_STRESS") == "1"
RUNS = 50 if STRESS else 20
STREAM = 400
SCRIPT = Path(__file__).with_name("stream_checkouts.py")


def test_kill_at_random_moments_then_retry_everything(home, tmp_path):
    with Service.open(home) as svc:
        codes = [s.code for s in svc.issue_cards({"count": 8})]
    codes_file = tmp_path / "codes.txt"
    codes_file.write_text("\n".join(codes))
    rng = random.Random(9)
    acknowledged: set[str] = set()
    done = 0
    for _run in range(RUNS):
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), str(home), str(codes_file), str(done), str(STREAM)],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(rng.uniform(0.25, 0.7))  # start-up takes ~0.2 s: most kills land mid-stream
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        printed = out.split()
        acknowledged.update(printed)
        conn = sqlite3.connect(home / "anoncard.db")
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            # nothing half applied: one ledger entry per document, history equals the documents
            orphans = conn.execute(
                "SELECT count(*) FROM txns t WHERE (SELECT count(*) FROM ledger l WHERE l.txn_id = t.id) != 1"
            ).fetchone()[0]
            assert orphans == 0
            for card_id, spend in conn.execute("SELECT card_id, sum(spend_cents) FROM txns GROUP BY card_id"):
                (history,) = conn.execute(
                    "SELECT sum(spend_cents) FROM history WHERE card_id = ?", (card_id,)
                ).fetchone()
                assert history == spend
            stored = conn.execute("SELECT count(*) FROM txns").fetchone()[0]
        finally:
            conn.close()
        # every printed receipt is stored; at most the one in flight is stored but unprinted
        assert len(acknowledged) <= stored <= len(acknowledged) + 1
        done += len(printed)
    # the tills retry everything they never got an answer for: each counts exactly once
    with Service.open(home) as svc:
        total = done + STREAM // 4
        for i in range(total):
            r = svc.checkout(request(codes, i))
            if i != done:  # the last kill may have left s-<done> stored but unacknowledged
                assert r.replayed == (i < done)
        programme = Programme.default()
        expected = dict.fromkeys(codes, 0)
        for i in range(total):
            req = request(codes, i)
            expected[req["card"]] += programme.points_for(
                [(ln["category"], int(ln["amount"].replace(".", ""))) for ln in req["lines"]]
            )
        assert {c: svc.balance({"card": c}).points for c in codes} == expected
        assert svc.store.counts()["txns"] == total
    assert done > RUNS  # the kills did land mid-stream, after some work
