"""A till process for the offline tests: sends a seeded checkout stream through TillClient.

ANONCARD_TILL_KEY=KEY python tests/till_stream.py URL OUTBOX CODES_FILE STREAM N [--drain]

Prints ``sent TXN queued|delivered`` once each checkout returned (delivered or queued: either way it is
safe on disk or on the server), then, with ``--drain``, replays the outbox until it is
empty and prints how many replays the server answered ``"replayed": true`` and ``drained``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from anoncard.client import Backoff, TillClient  # noqa: E402
from tests.till_helpers import stream_request  # noqa: E402


def main() -> None:
    url, outbox, codes_file, stream, n = sys.argv[1:6]
    codes = Path(codes_file).read_text().split()
    key = os.environ["ANONCARD_TILL_KEY"]
    with TillClient(url, key, Path(outbox), timeout=2.0, backoff=Backoff(base=0.05, cap=0.5)) as till:
        for i in range(int(n)):
            sent = till.checkout(stream_request(codes, stream, i))
            print(f"sent {stream}-{i} {'queued' if sent.queued else 'delivered'}", flush=True)
        if "--drain" in sys.argv:
            replayed = 0
            while True:
                report = till.flush()
                replayed += len(report.replayed)
                if not report.remaining:
                    break
                time.sleep(0.05)
            print(f"replayed {replayed}", flush=True)  # credited before a kill cut the answer: not again
            print("drained", flush=True)


if __name__ == "__main__":
    main()
