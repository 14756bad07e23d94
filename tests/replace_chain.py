"""A chain of card replacements for tests/test_replace_kill.py, to be killed at any moment.

python tests/replace_chain.py HOME RECOVERY_CODE N

Replacement ``i`` uses the recovery code the one before printed. Each prints
``new CARD RECOVERY`` when its codes are delivered (before its transaction commits) and
``done`` once the replacement returned.
"""

from __future__ import annotations

import sys
from datetime import date, datetime, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from anoncard import Service  # noqa: E402
from anoncard.selfservice import Holder  # noqa: E402

DAY = date(2015, 3, 2)


def main() -> None:
    home, code, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with Service.open(home, clock=lambda: datetime.combine(DAY, time(10, 30))) as svc:
        holder = Holder(svc)
        for i in range(n):
            r = holder.replace(
                {"recovery": code, "history": i % 2 == 0},
                emit=lambda c: print(f"new {c.card.code} {c.recovery.code}", flush=True),
            )
            code = r.issued.recovery.code
            print("done", flush=True)


if __name__ == "__main__":
    main()
