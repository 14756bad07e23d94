"""``anoncard serve`` holds at most one request's worth of a line, however long the line (a real process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from anoncard import Service

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
    assert report["maxrss_kib"] < 100 * 1024, report["maxrss_kib"]  # it read the whole line: 439 MB
    assert report["rc"] == 0
    assert answers[0] == {"ok": False, "error": {"code": "too_large", "message": "request: larger than 1048576 bytes"}}
    assert answers[1]["ok"] and answers[1]["result"]["points"] == 0
