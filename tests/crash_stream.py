"""A seeded checkout stream for tests/test_crash.py: prints each document number once its checkout returned.

python tests/crash_stream.py HOME CODES_FILE N SEED

Request ``i`` of stream ``SEED`` depends on nothing else, so the test (and a rerun) can
rebuild it exactly: a retry carries the same content and counts once.
"""

from __future__ import annotations

import random
import sys
from datetime import date, datetime, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from anoncard import Service  # noqa: E402

DAY = date(2015, 3, 2)
CATEGORIES = ("dairy", "fruit", "coffee", "bakery", "wine", "vegetables", "snacks")


def request(codes: list[str], seed: int, i: int) -> dict:
    """The i-th checkout of stream ``seed`` (a string seed: the same in every process)."""
    rng = random.Random(f"crash-stream/{seed}/{i}")
    lines = [
        {"category": category, "amount": f"{rng.randint(0, 45)}.{rng.randint(1, 99):02d}"}
        for category in rng.sample(CATEGORIES, rng.randint(1, 4))
    ]
    return {"card": rng.choice(codes), "txn": f"s-{i}", "lines": lines}


def main() -> None:
    home, codes_file, n, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    codes = Path(codes_file).read_text().split()
    with Service.open(home, clock=lambda: datetime.combine(DAY, time(10, 30))) as svc:
        for i in range(n):
            svc.checkout(request(codes, seed, i))
            print(f"s-{i}", flush=True)


if __name__ == "__main__":
    main()
