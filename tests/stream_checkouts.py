"""A checkout stream for the crash tests: prints each document number once its checkout returned.

python tests/stream_checkouts.py HOME CODES_FILE START COUNT
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from anoncard import Service  # noqa: E402


def request(codes: list[str], i: int) -> dict:
    """The i-th request of the stream: deterministic, so a rerun retries the same content."""
    return {
        "card": codes[i % len(codes)],
        "txn": f"s-{i}",
        "lines": [
            {"category": "dairy", "amount": f"{1 + i % 7}.{i % 100:02d}"},
            {"category": "fruit", "amount": f"{2 + i % 5}.49"},
            {"category": "coffee", "amount": f"{3 + i % 3}.99"},
        ],
    }


def main() -> None:
    home, codes_file, start, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    codes = Path(codes_file).read_text().split()
    with Service.open(home) as svc:
        for i in range(start, start + count):
            svc.checkout(request(codes, i))
            print(f"s-{i}", flush=True)


if __name__ == "__main__":
    main()
