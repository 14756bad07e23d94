"""One-shot CLI checkout wall time against ``python -c pass``, same run, medians.

python benchmarks/cli_startup.py [--runs 15] [--json PATH]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from anoncard import Service, init_home  # noqa: E402
from benchmarks.common import write_json  # noqa: E402


def wall(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    exe = Path(sys.executable)
    anoncard = exe.parent / "anoncard"
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        init_home(home)
        with Service.open(home) as svc:
            code = svc.issue_cards({"count": 1})[0].code
        base, cli = [], []
        for i in range(args.runs):  # interleaved
            base.append(wall([str(exe), "-c", "pass"]))
            cli.append(
                wall(
                    [
                        str(anoncard),
                        "--home",
                        str(home),
                        "checkout",
                        "--card",
                        code,
                        "--txn",
                        f"cli-{i}",
                        "--line",
                        "dairy=3.49",
                        "--line",
                        "coffee=7.99",
                    ]
                )  # fmt: skip
            )
    b, c = statistics.median(base), statistics.median(cli)
    result = {
        "benchmark": "cli_startup",
        "runs": args.runs,
        "python_c_pass_ms_median": round(b * 1000, 1),
        "cli_checkout_ms_median": round(c * 1000, 1),
        "ratio": round(c / b, 2),
    }
    print(f"python -c pass       {b * 1000:7.1f} ms (median of {args.runs})")
    print(f"anoncard checkout    {c * 1000:7.1f} ms (median of {args.runs})")
    print(f"ratio                {c / b:7.2f}")
    return write_json(args.json, result)


if __name__ == "__main__":
    main()
