"""Checkouts over HTTP (``anoncard server``) next to the library in-process: same run, same durability.

python benchmarks/http_server.py [--n 3000] [--rounds 3] [--threads 1,4,16] [--connections 32] [--json PATH]

The server runs in a process of its own (synchronous=FULL, as the library here; one server per
database thread count, the rounds interleaved with the library's), loaded by
an asyncio client with ``--connections`` keep-alive connections: first closed-loop (each
connection sends its next checkout when the last is answered) for the maximum rate, per
database thread count; then open-loop at half that rate for p50/p99 latency (measured
from each request's scheduled time, so a stall is not hidden). Also the server's peak RSS.

(Not named http.py: run as a script, its folder comes first on sys.path and would shadow
the standard library's http package for everything the benchmarks import.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from anoncard import Service, init_home  # noqa: E402
from anoncard.terminals import Terminals  # noqa: E402
from benchmarks.checkout import baskets  # noqa: E402
from benchmarks.common import write_json  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, port: int, threads: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "anoncard", "--home", str(home), "server", "--port", str(port),
         "--threads", str(threads)],
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("the server did not start") from None
            time.sleep(0.05)
    proc.terminate()
    raise SystemExit("the server did not start in 30 s")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def encode(request: dict, key: str) -> bytes:
    body = json.dumps(request).encode()
    head = (
        f"POST /v1/checkout HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> None:
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = head[9:12]
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    body = await reader.readexactly(length)
    if status != b"200":
        raise SystemExit(f"the server answered {status.decode()}: {body[:200].decode(errors='replace')}")


async def closed_loop(port: int, requests: list[bytes], connections: int) -> float:
    """Checkouts/s with every connection busy all the time."""
    streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(connections)]
    queue = iter(requests)

    async def worker(reader, writer) -> None:
        for raw in queue:
            await _exchange(reader, writer, raw)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(r, w) for r, w in streams))
    elapsed = time.perf_counter() - t0
    for _, w in streams:
        w.close()
    return len(requests) / elapsed


async def open_loop(port: int, requests: list[bytes], connections: int, rate: float) -> list[float]:
    """Latencies (s) at a fixed offered rate, each from its scheduled send time."""
    streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(connections)]
    latencies: list[float] = []
    start = time.perf_counter() + 0.05

    async def worker(i: int, reader, writer) -> None:
        for j in range(i, len(requests), connections):
            scheduled = start + j / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await _exchange(reader, writer, requests[j])
            latencies.append(time.perf_counter() - scheduled)

    await asyncio.gather(*(worker(i, r, w) for i, (r, w) in enumerate(streams)))
    for _, w in streams:
        w.close()
    return latencies


def run_library(home: Path, requests: list[dict]) -> float:
    with Service.open(home) as svc:  # synchronous=FULL, as the server's
        t0 = time.perf_counter()
        for r in requests:
            svc.checkout(r)
        return len(requests) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000, help="checkouts per measurement")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="1,4,16", help="database thread counts to compare")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    thread_counts = [int(t) for t in args.threads.split(",")]
    seed = iter(range(1000, 10_000))
    lib: list[float] = []
    srv: dict[int, list[float]] = {t: [] for t in thread_counts}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        init_home(home)
        with Service.open(home) as svc:
            codes = [s.code for s in svc.issue_cards({"count": 1000})]
            _, key = Terminals(svc).add("bench-till", "till")
        servers, rss = {}, {}
        try:
            for threads in thread_counts:  # all up at once, idle but one: the rounds interleave
                port = free_port()
                servers[threads] = (port, start_server(home, port, threads))
            for _ in range(args.rounds):
                lib.append(run_library(home, baskets(args.n, codes, seed=next(seed))))
                for threads, (port, _proc) in servers.items():
                    raw = [encode(r, key) for r in baskets(args.n, codes, seed=next(seed))]
                    srv[threads].append(asyncio.run(closed_loop(port, raw, args.connections)))
            rss = {threads: peak_rss_mib(proc.pid) for threads, (_port, proc) in servers.items()}
        finally:
            for _port, proc in servers.values():
                proc.terminate()
                proc.wait(timeout=30)
        medians = {t: statistics.median(v) for t, v in srv.items()}
        best = max(medians, key=medians.__getitem__)
        port = free_port()
        proc = start_server(home, port, best)
        try:
            rate = medians[best] / 2
            raw = [encode(r, key) for r in baskets(args.n, codes, seed=next(seed))]
            latencies = sorted(asyncio.run(open_loop(port, raw, args.connections, rate)))
            rss_after = peak_rss_mib(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    library = statistics.median(lib)
    result = {
        "checkouts": args.n,
        "rounds": args.rounds,
        "connections": args.connections,
        "library_checkouts_per_s_median": round(library),
        "http_checkouts_per_s_median_by_threads": {str(t): round(m) for t, m in medians.items()},
        "http_best_threads": best,
        "http_checkouts_per_s_median": round(medians[best]),
        "ratio_http_to_library": round(medians[best] / library, 2),
        "half_max_rate_per_s": round(rate),
        "latency_p50_ms_at_half_max": round(latencies[len(latencies) // 2] * 1000, 2),
        "latency_p99_ms_at_half_max": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 2),
        "server_peak_rss_mib_by_threads": {str(t): v for t, v in rss.items()},
        "server_peak_rss_mib_latency_run": rss_after,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
