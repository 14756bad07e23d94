"""kill -9 in the middle of a chain of card replacements: the balance is always on exactly one card
(the old one or the new one, never both, never neither), and that card's recovery code works once."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from anoncard import Service
from anoncard.errors import UnknownCard
from anoncard.selfservice import Holder
from anoncard.storage import database_url
from tests.cli_helpers import execute
from tests.conftest import basket, fixed_clock

RUNS = 20 if os.environ.get("ANONCARD_STRESS") == "1" else 6
SCRIPT = Path(__file__).with_name("replace_chain.py")
REPO = Path(__file__).resolve().parent.parent


def _holder_of(svc: Service, codes: list[str]) -> list[tuple[str, int]]:
    """``(card code, points)`` of every code in ``codes`` the store still knows."""
    known = []
    for code in codes:
        with contextlib.suppress(UnknownCard):
            known.append((code, svc.balance({"card": code}).points))
    return known


@pytest.mark.parametrize("run", range(RUNS))
def test_a_replacement_killed_at_any_moment_leaves_the_balance_on_exactly_one_card(home, run):
    with Service.open(home, clock=fixed_clock) as svc:
        lost, bystander = svc.issue_cards_with_stubs({"count": 2})
        svc.checkout({"card": lost.card.code, "txn": "t1", "lines": basket(("dairy", "123.45"), ("fish", "9.99"))})
        svc.checkout({"card": bystander.card.code, "txn": "t2", "lines": basket(("dairy", "5.00"))})
        points = svc.balance({"card": lost.card.code}).points
    child = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(home), lost.recovery.code, "100000"],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    assert child.stdout is not None
    first = [child.stdout.readline(), child.stdout.readline()]  # the first replacement committed ...
    assert first[1] == "done\n", first
    time.sleep(random.Random(run).uniform(0.0, 1.5))  # ... then more, and one is cut short
    child.send_signal(signal.SIGKILL)
    out, _ = child.communicate()
    lines = "".join(first + [out]).splitlines()
    cards = [lost.card.code] + [ln.split()[1] for ln in lines if ln.startswith("new ")]
    stubs = [lost.recovery.code] + [ln.split()[2] for ln in lines if ln.startswith("new ")]
    if database_url(home) is None:  # (PostgreSQL enforces its foreign keys at every commit)
        assert execute(home, "PRAGMA foreign_key_check") == []
    assert execute(home, "SELECT card_id, new_card_id FROM erasure") == [(None, None)]
    assert execute(home, "SELECT count(*) FROM recovery") == [(2,)]  # one stub per live card
    with Service.open(home, clock=fixed_clock) as svc:
        assert svc.store.integrity_check() == ["ok"]
        held = _holder_of(svc, cards)
        assert len(held) == 1, held  # never both, never neither
        code, balance = held[0]
        assert balance == points
        assert svc.store.count_cards() == 2  # the holder's card and the bystander's, no half-made card
        assert svc.balance({"card": bystander.card.code}).points == 5
        survivor = stubs[cards.index(code)]
        done = sum(1 for ln in lines if ln == "done")
        assert len(cards) > done >= 1  # killed mid-chain
        assert cards.index(code) in (done, done + 1)  # the last finished one, or the one cut short after commit
        holder = Holder(svc)
        for stub in stubs:
            if stub != survivor:
                with pytest.raises(UnknownCard):
                    holder.replace({"recovery": stub})
        final = holder.replace({"recovery": survivor})  # the surviving stub works, once
        assert final.balance == points
        with pytest.raises(UnknownCard):
            holder.replace({"recovery": survivor})
