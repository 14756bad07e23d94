"""The whole Complete Journey year through the library: baskets/s, wall time, peak RSS.

The data set is exported to JSON lines by a child process first, so the peak RSS
reported is anoncard's (plus the line being read), not pandas'. With
``ANONCARD_DATABASE_URL`` set the home's database is that PostgreSQL database
(benchmarks/postgres.py runs it so); ``--synchronous`` then does not apply.

    python benchmarks/replay.py [--synchronous NORMAL|FULL] [--limit N] [--terminals K] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from anoncard import Service, init_home  # noqa: E402
from anoncard.storage import database_url  # noqa: E402
from benchmarks.common import on, write_json  # noqa: E402


def replay(
    home: Path, data: Path, codes: list[str], total: int, synchronous: str, part: int = 0, parts: int = 1
) -> tuple[int, int]:
    """Replay the first ``total`` baskets of ``data`` (those of households ``part`` mod ``parts``),
    each household's in time order; (baskets, category lines) replayed."""
    baskets = lines = 0
    with Service.open(home, synchronous=synchronous) as svc, data.open(encoding="utf-8") as fh:
        for i, raw in enumerate(fh):
            if i == total:
                break
            household, basket, at, items = json.loads(raw)
            if household % parts != part:
                continue
            on(svc, datetime.fromisoformat(at)).checkout(
                {
                    "card": codes[household],
                    "txn": f"cj-{basket}",
                    "lines": [{"category": c, "amount": f"{a // 100}.{a % 100:02d}"} for c, a in items],
                },
            )
            baskets += 1
            lines += len(items)
            if parts == 1 and baskets % (total // 10 or 1) == 0:
                print(f"  {baskets * 100 // total:3d} %  {baskets} baskets", file=sys.stderr)
    return baskets, lines


def _terminal(
    home: Path, data: Path, codes: list[str], total: int, synchronous: str, part: int, parts: int, out
) -> None:
    out.put(
        (
            *replay(home, data, codes, total, synchronous, part, parts),
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        )
    )


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synchronous", choices=["NORMAL", "FULL"], default="NORMAL")
    ap.add_argument("--limit", type=int, default=0, help="replay only the first N baskets (smoke runs)")
    ap.add_argument(
        "--terminals",
        type=int,
        default=1,
        help="replay in this many processes at once, households split between them (default 1)",
    )
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
        n_households = 0
        with data.open(encoding="utf-8") as fh:
            for line in fh:
                n_households = max(n_households, json.loads(line)[0] + 1)
        with Service.open(home, synchronous=args.synchronous) as svc:
            codes = [s.code for s in svc.issue_cards({"count": n_households})]
        total = args.limit or sum(1 for _ in data.open(encoding="utf-8"))
        t0 = time.perf_counter()
        if args.terminals == 1:
            baskets, lines = replay(home, data, codes, total, args.synchronous)
            peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        else:
            ctx = multiprocessing.get_context("fork")
            out = ctx.Queue()
            procs = [
                ctx.Process(target=_terminal, args=(home, data, codes, total, args.synchronous, w, args.terminals, out))
                for w in range(args.terminals)
            ]
            for p in procs:
                p.start()
            parts = [out.get() for _ in procs]
            for p in procs:
                p.join()
                assert p.exitcode == 0, "a replaying terminal failed"
            baskets, lines = sum(b for b, _l, _r in parts), sum(n for _b, n, _r in parts)
            peak_kb = max(r for _b, _l, r in parts)
        wall = time.perf_counter() - t0
        backend = "sqlite" if database_url(home) is None else "postgresql"
        with Service.open(home) as svc:
            assert svc.store.counts()["txns"] == baskets, "a basket was not stored"
            if backend == "sqlite":
                db_bytes = (home / "anoncard.db").stat().st_size
            else:
                (db_bytes,) = svc.store.conn.execute("SELECT pg_database_size(current_database())").fetchone()
    peak_mb = peak_kb / 1024
    result = {
        "benchmark": "replay",
        "backend": backend,
        "synchronous": args.synchronous if backend == "sqlite" else "synchronous_commit on",
        "terminals": args.terminals,
        "baskets": baskets,
        "category_lines": lines,
        "cards": n_households,
        "wall_s": round(wall, 1),
        "baskets_per_s": round(baskets / wall),
        "peak_rss_mb": round(peak_mb, 1),
        "db_mb": round(db_bytes / 2**20, 1),
    }
    print(
        f"replayed {baskets} baskets ({lines} category lines, {n_households} cards, {args.terminals} terminals) "
        f"in {wall:.1f} s: {baskets / wall:.0f} baskets/s, peak RSS {peak_mb:.0f} MB (per terminal), "
        f"database {db_bytes / 2**20:.0f} MB"
    )
    return write_json(args.json, result)


if __name__ == "__main__":
    main()
