"""``anoncard serve`` on the protocol module: bounded lines, one dispatch table."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

from anoncard import Service, protocol, serve
from anoncard.protocol import Context

REPO = Path(__file__).resolve().parent.parent

# Streams 200 MB of one line into a serve process, then a balance line; prints the child's
# answers and its peak RSS (ru_maxrss of the waited-for children of this wrapper, in KiB).
FEEDER = r"""
import json, resource, subprocess, sys, threading
home, card = sys.argv[1], sys.argv[2]
proc = subprocess.Popen([sys.executable, "-m", "anoncard", "--home", home, "serve"],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
def feed():
    chunk = b"x" * (1 << 20)
    proc.stdin.write(b'{"op": "balance", "card": "')
    for _ in range(200):
        proc.stdin.write(chunk)
    proc.stdin.write(b'"}\n' + json.dumps({"op": "balance", "card": card}).encode() + b"\n")
    proc.stdin.close()
writer = threading.Thread(target=feed)
writer.start()
out = proc.stdout.read()
writer.join()
proc.wait()
print(json.dumps({"out": out.decode(), "rc": proc.returncode,
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def test_a_200_mb_line_is_refused_with_low_memory_and_the_stream_goes_on(home):
    with Service.open(home) as svc:
        card = svc.issue_cards({"count": 1})[0].code
    run = subprocess.run([sys.executable, "-c", FEEDER, str(home), card], capture_output=True, text=True,
                         cwd=REPO, timeout=300, check=True)  # fmt: skip
    report = json.loads(run.stdout)
    answers = [json.loads(line) for line in report["out"].splitlines()]
    assert report["rc"] == 0
    assert answers[0] == {"ok": False, "error": {"code": "too_large", "message": "request: larger than 1048576 bytes"}}
    assert answers[1]["ok"] and answers[1]["result"]["points"] == 0
    assert report["maxrss_kib"] < 100 * 1024, report["maxrss_kib"]


def answers(svc: Service, text: bytes) -> list[dict]:
    out = io.StringIO()
    serve.run(Context(svc), io.BytesIO(text), out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_the_line_limit_is_exact(svc):
    card = svc.issue_cards({"count": 1})[0].code
    body = json.dumps({"op": "balance", "card": card}).encode()
    at_limit = body + b" " * (protocol.MAX_REQUEST_BYTES - len(body))
    got = answers(svc, at_limit + b"\n" + at_limit + b" \n" + at_limit + b"\r\n" + at_limit)
    assert [a["ok"] for a in got] == [True, False, True, True]
    assert got[1]["error"]["code"] == "too_large"


def test_serve_offers_the_terminal_operations_and_not_the_operators(svc):
    card = svc.issue_cards({"count": 1})[0].code
    lines = [
        {"op": "coupon_public_key"},
        {"op": "issue_cards", "count": 3},
        {"op": ["balance"], "card": card},
        {"op": "balance", "card": card, "at": "2015-03-01"},
        {"op": "checkout", "card": card, "txn": "t1", "lines": [{"category": "dairy", "amount": "1.00"}],
         "at": "2015-03-01T09:00:00"},
        {"op": "checkout", "card": card, "txn": "t2", "lines": [{"category": "dairy", "amount": "1.00"}],
         "at": "1 March"},
    ]  # fmt: skip
    got = answers(svc, b"\n".join(json.dumps(x).encode() for x in lines) + b"\n\n")
    assert len(got) == len(lines)
    assert got[0]["ok"] and len(got[0]["result"]["ed25519_public_key"]) == 44
    assert got[1]["error"]["message"].startswith("field 'op': must be one of checkout, refund, redeem, balance")
    assert got[2]["error"]["message"].startswith("field 'op'")
    assert got[3]["error"]["message"].startswith("field 'at': not allowed in a balance request")
    assert got[4]["ok"] and got[4]["result"]["points"] == 1
    assert got[5]["error"] == {"code": "policy_violation", "message": protocol.AT_RULE}
    assert svc.store.count_cards() == 1
