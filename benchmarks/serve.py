"""``anoncard serve`` throughput next to the library's, same run, same home, medians.

python benchmarks/serve.py [--n 2000] [--rounds 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from anoncard import Service, init_home  # noqa: E402
from benchmarks.checkout import baskets  # noqa: E402
from benchmarks.common import write_json  # noqa: E402


def run_serve(anoncard: Path, home: Path, requests: list[dict]) -> float:
    """Checkouts/s through one long-lived ``anoncard serve`` process.

    The clock starts once the process has answered a first request (a balance): a
    terminal starts its server once a day, so start-up is the CLI benchmark's business.
    """
    lines = [json.dumps({"op": "checkout", **r}) + "\n" for r in requests]
    proc = subprocess.Popen(
        [str(anoncard), "--home", str(home), "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    proc.stdin.write(json.dumps({"op": "balance", "card": requests[0]["card"]}) + "\n")
    proc.stdin.flush()
    if not json.loads(proc.stdout.readline())["ok"]:
        raise SystemExit("serve did not answer the first request")
    t0 = time.perf_counter()

    def feed() -> None:
        for line in lines:
            proc.stdin.write(line)
        proc.stdin.close()

    writer = threading.Thread(target=feed)
    writer.start()
    ok = sum(1 for line in proc.stdout if json.loads(line)["ok"])
    elapsed = time.perf_counter() - t0
    writer.join()
    proc.stdout.close()
    proc.wait()
    if ok != len(requests):
        raise SystemExit(f"serve answered {ok} of {len(requests)} requests ok")
    return len(requests) / elapsed


def run_library(home: Path, requests: list[dict]) -> float:
    with Service.open(home) as svc:
        t0 = time.perf_counter()
        for r in requests:
            svc.checkout(r)
        return len(requests) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    anoncard = Path(sys.executable).parent / "anoncard"
    lib, srv = [], []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        init_home(home)
        with Service.open(home) as svc:
            codes = [s.code for s in svc.issue_cards({"count": 1000})]
        for r in range(args.rounds):
            lib.append(run_library(home, baskets(args.n, codes, seed=100 + r)))
            srv.append(run_serve(anoncard, home, baskets(args.n, codes, seed=200 + r)))
    lib_m, srv_m = statistics.median(lib), statistics.median(srv)
    result = {
        "benchmark": "serve",
        "checkouts_per_round": args.n,
        "rounds": args.rounds,
        "synchronous": "FULL",
        "library_checkouts_per_s_median": round(lib_m),
        "serve_checkouts_per_s_median": round(srv_m),
        "ratio_serve_to_library": round(srv_m / lib_m, 3),
    }
    print(f"checkout (default durability: WAL, synchronous=FULL), {args.rounds} rounds x {args.n}:")
    print(f"  library  {lib_m:8.0f} checkouts/s (median)")
    print(f"  serve    {srv_m:8.0f} checkouts/s (median)")
    print(f"  ratio    {srv_m / lib_m:8.3f}")
    return write_json(args.json, result)


if __name__ == "__main__":
    main()
