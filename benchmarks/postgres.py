"""PostgreSQL at chain scale: throughput, concurrency, the real year and growth to a million cards.

Starts a throwaway PostgreSQL cluster of its own (initdb and pg_ctl on a unix socket in a
temp dir, tests/pg_cluster.py) with production durability: fsync, full page writes and
synchronous_commit on, so every acknowledged checkout is on disk. Then, in one run:

(a) library checkouts on PostgreSQL next to a raw psycopg loop doing the same statements
    (card row locked by token, its balance, the document, its ledger entry, five history
    upserts and the day's visit, one transaction per checkout), at 1 and at 8 connections
    (one process per connection), rounds interleaved so both see the same machine noise;
(b) 8 terminal processes through the library on PostgreSQL next to 8 on SQLite
    (synchronous=FULL, durable too), in the same rounds;
(c) the Complete Journey year (or its first ``--replay-limit`` baskets) replayed through
    PostgreSQL by benchmarks/replay.py, by 8 terminal processes at once (households split
    between them, each household's baskets in time order);
(d) enter and checkout latency at 10k and at 1M cards: two databases, cards loaded with
    COPY (tokens under the real key ring) and given the history benchmarks/scale.py gives
    them, then measured alternately, round by round.

    python benchmarks/postgres.py [--n 1000] [--rounds 3] [--sizes 10000,1000000] [--ops 1000]
        [--latency-rounds 3] [--replay-limit 0] [--replay-terminals 8] [--skip replay,scale] [--json PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402

from anoncard import Service, init_home  # noqa: E402
from anoncard.cards import generate  # noqa: E402
from anoncard.postgres import PostgresStore  # noqa: E402
from benchmarks.checkout import CATEGORIES, baskets  # noqa: E402
from benchmarks.common import on, write_json  # noqa: E402
from benchmarks.scale import CATEGORIES as SCALE_CATEGORIES  # noqa: E402
from benchmarks.scale import TODAY, WEIGHTS  # noqa: E402
from benchmarks.scale import measure as measure_latency  # noqa: E402
from tests.pg_cluster import Cluster  # noqa: E402

CTX = multiprocessing.get_context("fork")
DAY = date(2015, 3, 2)
CARDS = 1000
TERMINALS = 8


# -- homes and databases -------------------------------------------------------------------


def new_database(cluster: Cluster, name: str) -> str:
    with cluster.admin() as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return cluster.url(name)


def pg_home(cluster: Cluster, path: Path, name: str) -> Path:
    """An initialised home whose database is a new PostgreSQL database ``name``."""
    url = new_database(cluster, name)
    path.mkdir(parents=True)
    (path / "database.toml").write_text(f'database = "{url}"\n', encoding="utf-8")
    init_home(path)
    return path


def issue(home: Path, count: int) -> list[str]:
    with Service.open(home) as svc:
        return [s.code for s in svc.issue_cards({"count": count})]


def raw_database(cluster: Cluster, cards: int) -> tuple[str, list[bytes]]:
    """A database with anoncard's schema (its indexes and triggers) and ``cards`` cards whose
    tokens the raw loop computes as the library does (HMAC-SHA256 of the secret)."""
    url = new_database(cluster, "raw")
    PostgresStore(url).close()  # the same migrated schema
    secrets_ = [random.randbytes(17) for _ in range(cards)]
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO key_versions (version, state) VALUES (1, 'primary')")
        with conn.cursor().copy("COPY cards (token, key_version) FROM STDIN") as copy:
            for s in secrets_:
                copy.write_row((raw_token(s), 1))
    return url, secrets_


def raw_token(secret: bytes) -> bytes:
    import hmac

    return hmac.new(b"k" * 32, secret, hashlib.sha256).digest()


# -- the terminals --------------------------------------------------------------------------


def library_terminal(home: str, requests: list[dict], barrier, out) -> None:
    with Service.open(Path(home)) as svc:
        on(svc, DAY).checkout({**requests[0], "txn": requests[0]["txn"] + "-warm"})  # startup records
        barrier.wait(timeout=120)
        t0 = time.monotonic()
        for r in requests:
            on(svc, DAY).checkout(r)
        out.put((t0, time.monotonic()))


def raw_terminal(url: str, work: list[tuple], barrier, out) -> None:
    """The statements a library checkout runs on PostgreSQL, without the gate, the key
    generation check, the receipt or the idempotent replay path."""
    day = DAY.isoformat()
    with psycopg.connect(url, autocommit=True) as conn:

        def checkout(ref: bytes, secret: bytes, lines: list[tuple[str, int]]) -> None:
            with conn.transaction():
                card_id, _v = conn.execute(
                    "SELECT id, key_version FROM cards WHERE token = %s FOR UPDATE", (raw_token(secret),)
                ).fetchone()
                (balance,) = conn.execute(
                    "SELECT coalesce(sum(points), 0) FROM ledger WHERE card_id = %s", (card_id,)
                ).fetchone()
                spend = sum(a for _c, a in lines)
                points = spend // 100
                content = hashlib.sha256(json.dumps(["checkout", card_id, lines]).encode()).digest()
                (txn_id,) = conn.execute(
                    "INSERT INTO txns (ref, kind, card_id, parent_id, day, content, lines, spend_cents,"
                    " discount_cents, item, balance_after) VALUES (%s, 'checkout', %s, NULL, %s, %s, %s, %s, 0,"
                    " NULL, %s) ON CONFLICT (ref) DO NOTHING RETURNING id",
                    (ref, card_id, day, content, json.dumps(lines), spend, balance + points),
                ).fetchone()
                conn.execute(
                    "INSERT INTO ledger (card_id, txn_id, points, day) VALUES (%s, %s, %s, %s)",
                    (card_id, txn_id, points, day),
                )
                conn.cursor().executemany(
                    "INSERT INTO history (card_id, day, category, spend_cents, baskets) VALUES (%s, %s, %s, %s, 1)"
                    " ON CONFLICT (card_id, day, category) DO UPDATE SET"
                    " spend_cents = history.spend_cents + excluded.spend_cents,"
                    " baskets = history.baskets + excluded.baskets",
                    [(card_id, day, c, a) for c, a in lines],
                )
                conn.execute(
                    "INSERT INTO visits (card_id, day, visits, spend_cents) VALUES (%s, %s, 1, %s)"
                    " ON CONFLICT (card_id, day) DO UPDATE SET"
                    " visits = visits.visits + excluded.visits,"
                    " spend_cents = visits.spend_cents + excluded.spend_cents",
                    (card_id, day, spend),
                )

        ref, secret, lines = work[0]
        checkout(ref + b"-warm", secret, lines)
        barrier.wait(timeout=120)
        t0 = time.monotonic()
        for ref, secret, lines in work:
            checkout(ref, secret, lines)
        out.put((t0, time.monotonic()))


def run_terminals(target, args_per_terminal: list[tuple]) -> float:
    """Run one process per argument tuple at once; checkouts per second over them all."""
    n = len(args_per_terminal)
    barrier, out = CTX.Barrier(n), CTX.Queue()
    procs = [CTX.Process(target=target, args=(*a, barrier, out)) for a in args_per_terminal]
    for p in procs:
        p.start()
    spans = [out.get(timeout=900) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0, f"a terminal failed (exit {p.exitcode})"
    total = sum(len(a[1]) for a in args_per_terminal)
    return total / (max(t1 for _t0, t1 in spans) - min(t0 for t0, _t1 in spans))


def throughput(cluster: Cluster, tmp: Path, n: int, rounds: int, connections: list[int]) -> dict:
    lib_home = pg_home(cluster, tmp / "lib", "lib")
    lib_codes = issue(lib_home, CARDS)
    sqlite_home = tmp / "sqlite"
    init_home(sqlite_home)
    sqlite_codes = issue(sqlite_home, CARDS)
    raw_url, raw_secrets = raw_database(cluster, CARDS)

    def raw_work(tag: str, seed: int, count: int) -> list[tuple]:
        rng = random.Random(seed)
        return [
            (
                f"{tag}-{i}".encode(),
                rng.choice(raw_secrets),
                [(c, rng.randint(50, 1500)) for c in rng.sample(CATEGORIES, 5)],
            )
            for i in range(count)
        ]

    rates: dict[str, list[float]] = {}
    for r in range(rounds):
        for conns in connections:
            per = max(1, n // conns) if conns > 1 else n
            seeds = [1000 * r + 10 * conns + w for w in range(conns)]
            rates.setdefault(f"library_pg_{conns}", []).append(
                run_terminals(library_terminal, [(str(lib_home), baskets(per, lib_codes, s)) for s in seeds])
            )
            rates.setdefault(f"raw_pg_{conns}", []).append(
                run_terminals(raw_terminal, [(raw_url, raw_work(f"r{r}-{conns}-{s}", s, per)) for s in seeds])
            )
        per = max(1, n // TERMINALS)
        seeds = [1000 * r + 500 + w for w in range(TERMINALS)]
        rates.setdefault(f"library_sqlite_{TERMINALS}", []).append(
            run_terminals(library_terminal, [(str(sqlite_home), baskets(per, sqlite_codes, s)) for s in seeds])
        )
        print(f"  round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in rates.items()), flush=True)
    med = {k: round(statistics.median(v)) for k, v in rates.items()}
    result: dict = {"checkouts_per_s_median": med, "rounds": {k: [round(x) for x in v] for k, v in rates.items()}}
    result["ratio_library_to_raw"] = {
        str(c): round(statistics.median(a / b for a, b in zip(rates[f"library_pg_{c}"], rates[f"raw_pg_{c}"],
                                                                strict=True)), 3)
        for c in connections
    }  # fmt: skip
    if TERMINALS in connections:
        result["ratio_pg_to_sqlite_8_terminals"] = round(statistics.median(
            a / b for a, b in zip(rates[f"library_pg_{TERMINALS}"], rates[f"library_sqlite_{TERMINALS}"],
                                  strict=True)), 3)  # fmt: skip
    return result


# -- growth to a million cards --------------------------------------------------------------


def load_cards(svc: Service, url: str, n: int, rng: random.Random, keep: list[str]) -> float:
    """``n`` cards under the primary key, with history on 4 days of the last 8 weeks (3 categories
    a day, Zipf-like), as benchmarks/scale.py gives them; loaded with COPY. Seconds taken."""
    t = time.perf_counter()
    primary = svc.ring.primary
    with svc.store.transaction():
        svc.store.count_cards()  # the key states reach the database in the first transaction
    with psycopg.connect(url) as conn:
        (start,) = conn.execute("SELECT coalesce(max(id), 0) FROM cards").fetchone()
        with conn.cursor().copy("COPY cards (id, token, key_version) FROM STDIN") as copy:
            for i in range(n):
                secret = generate()
                if len(keep) < 5000 and rng.random() < 5000 / n:
                    keep.append(secret.code)
                copy.write_row((start + 1 + i, primary.token(secret), primary.version))
        days = [(TODAY - timedelta(days=d)).isoformat() for d in range(56)]
        with conn.cursor().copy("COPY history (card_id, day, category, spend_cents, baskets) FROM STDIN") as copy:
            visits = []
            for card in range(start + 1, start + n + 1):
                for day in rng.sample(days, 4):
                    for c in set(rng.choices(SCALE_CATEGORIES, WEIGHTS, k=3)):
                        copy.write_row((card, day, c, rng.randint(99, 2999), 1))
                    visits.append((card, day))
        with conn.cursor().copy("COPY visits (card_id, day, visits, spend_cents) FROM STDIN") as copy:
            for card, day in visits:
                copy.write_row((card, day, 1, 0))
        conn.execute("SELECT setval(pg_get_serial_sequence('cards', 'id'), %s)", (start + n,))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - t


def growth(cluster: Cluster, tmp: Path, sizes: list[int], ops: int, rounds: int) -> dict:
    rng = random.Random(7)
    homes = []
    for size in sizes:
        home = pg_home(cluster, tmp / f"scale{size}", f"scale{size}")
        svc = Service.open(home)
        codes: list[str] = []
        build = load_cards(svc, svc.store.url, size, rng, codes)
        t = time.perf_counter()
        svc.refresh_stats()
        stats_s = time.perf_counter() - t
        (db,) = svc.store.conn.execute("SELECT pg_database_size(current_database())").fetchone()
        print(
            f"  {size} cards loaded in {build:.0f} s, stats in {stats_s:.0f} s, {db / size:.0f} bytes/card", flush=True
        )
        homes.append(
            (
                size,
                svc,
                codes,
                {
                    "cards": size,
                    "build_s": round(build, 1),
                    "refresh_stats_s": round(stats_s, 1),
                    "db_bytes_per_card": round(db / size),
                },
            )
        )
    samples: dict[int, list[dict]] = {size: [] for size in sizes}
    for r in range(rounds):  # alternately, so both sizes see the same machine
        for size, svc, codes, _row in homes:
            samples[size].append(measure_latency(svc, codes, ops, rng, f"r{r}"))
            m = samples[size][-1]
            print(
                f"  round {r + 1}, {size} cards: enter p50 {m['enter']['p50_ms']} p99 {m['enter']['p99_ms']} ms;"
                f" checkout p50 {m['checkout']['p50_ms']} p99 {m['checkout']['p99_ms']} ms",
                flush=True,
            )
    rows = []
    for size, svc, _codes, row in homes:
        svc.close()
        for op in ("enter", "checkout"):
            row[op] = {q: round(statistics.median(s[op][q] for s in samples[size]), 3) for q in ("p50_ms", "p99_ms")}
        row["rounds"] = samples[size]
        rows.append(row)
    first, last = rows[0], rows[-1]
    ratio = {
        f"{op}_{q}": round(statistics.median(b[op][q] / a[op][q] for a, b in
                                             zip(samples[first["cards"]], samples[last["cards"]], strict=True)), 2)
        for op in ("enter", "checkout") for q in ("p50_ms", "p99_ms")
    }  # fmt: skip
    return {"rows": rows, "ratio_largest_to_smallest": ratio}


# -- the real year ---------------------------------------------------------------------------


def replay_year(cluster: Cluster, limit: int, terminals: int) -> dict:
    url = new_database(cluster, "year")
    env = {**os.environ, "ANONCARD_DATABASE_URL": url}
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, str(Path(__file__).with_name("replay.py")), "--json", out.name]
        cmd += ["--terminals", str(terminals)]
        subprocess.run([*cmd, *(["--limit", str(limit)] if limit else [])], check=True, env=env)
        return json.loads(Path(out.name).read_text())


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="checkouts per round and configuration (split over terminals)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", default="1,8")
    ap.add_argument("--sizes", default="10000,1000000")
    ap.add_argument("--ops", type=int, default=1000, help="enter + checkout pairs per size and latency round")
    ap.add_argument("--latency-rounds", type=int, default=3)
    ap.add_argument("--replay-limit", type=int, default=0, help="replay only the first N baskets (0: the year)")
    ap.add_argument("--replay-terminals", type=int, default=TERMINALS, help="processes replaying at once")
    ap.add_argument("--skip", default="", help="comma-separated parts to leave out: throughput, replay, scale")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    cluster = Cluster(durable=True)
    result: dict = {"benchmark": "postgres", "durability": "fsync on, full_page_writes on, synchronous_commit on"}
    try:
        cluster.init()
        with cluster.admin() as conn:
            result["server"] = conn.execute("SHOW server_version").fetchone()[0]
            assert conn.execute("SHOW fsync").fetchone()[0] == "on"
            assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "on"
        with tempfile.TemporaryDirectory() as tmp:
            if "throughput" not in skip:
                conns = [int(c) for c in args.connections.split(",")]
                print(f"checkout throughput, {args.rounds} rounds x {args.n} checkouts:", flush=True)
                result["throughput"] = throughput(cluster, Path(tmp), args.n, args.rounds, conns)
            if "replay" not in skip:
                print("the Complete Journey year through PostgreSQL:", flush=True)
                result["replay"] = replay_year(cluster, args.replay_limit, args.replay_terminals)
            if "scale" not in skip:
                sizes = [int(s) for s in args.sizes.split(",")]
                print(f"latency at {sizes} cards, {args.latency_rounds} rounds x {args.ops}:", flush=True)
                result["scale"] = growth(cluster, Path(tmp), sizes, args.ops, args.latency_rounds)
    finally:
        cluster.remove()
    print(
        json.dumps(
            {k: v for k, v in result.items() if k != "scale"}
            | ({"scale": result["scale"]["ratio_largest_to_smallest"]} if "scale" in result else {}),
            indent=2,
        )
    )
    return write_json(args.json, result)


if __name__ == "__main__":
    main()
