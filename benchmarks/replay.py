"""The whole Complete Journey year through the library: baskets/s, wall time, peak RSS.

The data set is exported to JSON lines by a child process first, so the peak RSS
reported is anoncard's (plus the line being read), not pandas'.

    python benchmarks/replay.py [--synchronous NORMAL|FULL] [--limit N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from anoncard import Service, init_home  # noqa: E402
from benchmarks.common import on, write_json  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synchronous", choices=["NORMAL", "FULL"], default="NORMAL")
    ap.add_argument("--limit", type=int, default=0, help="replay only the first N baskets (smoke runs)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data, programme = Path(tmp) / "baskets.jsonl", Path(tmp) / "programme.toml"
        t0 = time.perf_counter()
        exporter = str(Path(__file__).with_name("completejourney.py"))
        subprocess.run([sys.executable, exporter, str(data), str(programme)], check=True)
        print(f"exported the data set in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        home = Path(tmp) / "home"
        init_home(home)
        (home / "programme.toml").write_text(programme.read_text(encoding="utf-8"), encoding="utf-8")
        svc = Service.open(home, synchronous=args.synchronous)
        n_households = 0
        with data.open(encoding="utf-8") as fh:
            for line in fh:
                n_households = max(n_households, json.loads(line)[0] + 1)
        codes = [s.code for s in svc.issue_cards({"count": n_households})]
        total = args.limit or sum(1 for _ in data.open(encoding="utf-8"))
        baskets = lines = 0
        t0 = time.perf_counter()
        with data.open(encoding="utf-8") as fh:
            for raw in fh:
                household, basket, at, items = json.loads(raw)
                on(svc, datetime.fromisoformat(at)).checkout(
                    {
                        "card": codes[household],
                        "txn": f"cj-{basket}",
                        "lines": [{"category": c, "amount": f"{a // 100}.{a % 100:02d}"} for c, a in items],
                    },
                )
                baskets += 1
                lines += len(items)
                if baskets % (total // 10 or 1) == 0:
                    print(f"  {baskets * 100 // total:3d} %  {baskets} baskets", file=sys.stderr)
                if baskets == total:
                    break
        wall = time.perf_counter() - t0
        db_bytes = (home / "anoncard.db").stat().st_size
        svc.close()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "benchmark": "replay",
        "synchronous": args.synchronous,
        "baskets": baskets,
        "category_lines": lines,
        "cards": n_households,
        "wall_s": round(wall, 1),
        "baskets_per_s": round(baskets / wall),
        "peak_rss_mb": round(peak_mb, 1),
        "db_mb": round(db_bytes / 2**20, 1),
    }
    print(
        f"replayed {baskets} baskets ({lines} category lines, {n_households} cards) in {wall:.1f} s: "
        f"{baskets / wall:.0f} baskets/s, peak RSS {peak_mb:.0f} MB, database {db_bytes / 2**20:.0f} MB"
    )
    return write_json(args.json, result)


if __name__ == "__main__":
    main()
