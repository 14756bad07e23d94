"""Run every benchmark and write benchmarks/results/results.{md,json}.

python benchmarks/run_all.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import (  # noqa: E402
    checkout,
    cli_startup,
    entrance,
    http_server,
    postgres,
    replay,
    scale,
    serve,
    suggestions,
)

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run, not a measurement")
    ap.add_argument("--table-only", action="store_true", help="rebuild the table from results/*.json")
    args = ap.parse_args(argv)
    q = args.quick
    runs = {  # each in a process of its own: the replay's peak RSS is its own, not the 1M-card build's
        "checkout_normal": (checkout, ["--n", "200" if q else "3000", "--rounds", "1" if q else "5"]),
        "checkout_full": (checkout, ["--n", "100" if q else "1000", "--rounds", "1" if q else "5",
                                     "--synchronous", "FULL"]),
        "serve": (serve, ["--n", "200" if q else "2000", "--rounds", "1" if q else "3"]),
        "http_server": (http_server, ["--n", "200" if q else "3000", "--rounds", "1" if q else "3",
                                      "--threads", "4" if q else "1,4,16"]),
        "cli_startup": (cli_startup, ["--runs", "3" if q else "21"]),
        "scale": (scale, ["--sizes", "1000,5000" if q else "10000,100000,1000000", "--ops", "50" if q else "2000"]),
        "replay": (replay, ["--limit", "3000"] if q else []),
        "entrance": (entrance, ["--limit-households", "60", "--n", "200"] if q else []),
        "suggestions": (suggestions, ["--limit-households", "60"] if q else []),
        "postgres": (postgres, ["--n", "40", "--rounds", "1", "--sizes", "1000,5000", "--ops", "50",
                                "--latency-rounds", "1", "--replay-limit", "500"] if q else []),
    }  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    out: dict = {"when": datetime.now().isoformat(timespec="seconds"), "machine": platform.platform()}
    for name, (module, params) in runs.items():
        path = RESULTS / f"{name}.json"
        if not args.table_only:
            subprocess.run([sys.executable, module.__file__, *params, "--json", str(path)], check=True)
        if path.exists():
            out[name] = json.loads(path.read_text())
    (RESULTS / "results.json").write_text(json.dumps(out, indent=2) + "\n")
    (RESULTS / "results.md").write_text(table(out))
    print((RESULTS / "results.md").read_text())


def table(r: dict) -> str:
    cn, cf, sv, cl, sc, rp, sg, en = (r[k] for k in ("checkout_normal", "checkout_full", "serve", "cli_startup",
                                                  "scale", "replay", "suggestions", "entrance"))  # fmt: skip
    big, small = sc["rows"][-1], sc["rows"][0]
    rows = [
        ("checkout, library vs raw sqlite3 (WAL, NORMAL: not durable)", f"{cn['library_checkouts_per_s_median']} vs "
         f"{cn['raw_sqlite_checkouts_per_s_median']} /s", f"ratio {cn['ratio_library_to_raw']}", "for reference"),
        ("checkout, library vs raw sqlite3 (WAL, FULL: durable commits)", f"{cf['library_checkouts_per_s_median']} vs "
         f"{cf['raw_sqlite_checkouts_per_s_median']} /s", f"ratio {cf['ratio_library_to_raw']}", ">= 0.5"),
        ("serve vs library (FULL)",
         f"{sv['serve_checkouts_per_s_median']} vs {sv['library_checkouts_per_s_median']} /s",
         f"ratio {sv['ratio_serve_to_library']}", ">= 0.8"),
        ("CLI one-shot checkout vs python -c pass",
         f"{cl['cli_checkout_ms_median']} vs {cl['python_c_pass_ms_median']} ms",
         f"ratio {cl['ratio']}", "<= 8"),
        ("replay of the year", f"{rp['baskets']} baskets in {rp['wall_s']} s ({rp['baskets_per_s']}/s)",
         f"peak RSS {rp['peak_rss_mb']} MB", "<= 60 s, <= 300 MB"),
        ("enter with the year loaded", f"p50 {en['enter_p50_ms']} ms", f"p99 {en['enter_p99_ms']} ms",
         "p99 <= 5 ms"),
        (f"enter at {big['cards']} cards", f"p50 {big['enter']['p50_ms']} ms", f"p99 {big['enter']['p99_ms']} ms",
         "p99 <= 10 ms"),
        (f"growth {small['cards']} -> {big['cards']} cards, p50",
         f"enter x{big['enter']['p50_ms'] / small['enter']['p50_ms']:.2f}",
         f"checkout x{big['checkout']['p50_ms'] / small['checkout']['p50_ms']:.2f}", "<= 1.5"),
        (f"growth {small['cards']} -> {big['cards']} cards, p99",
         f"enter x{sc['p99_ratio_largest_to_smallest']['enter']}",
         f"checkout x{sc['p99_ratio_largest_to_smallest']['checkout']}", "<= 1.5"),
        ("suggestions at the entrance, habits first (caps on): hit@3 / precision@3",
         f"{sg['caps_on']['ranker_habits_first']['hit@3']} / {sg['caps_on']['ranker_habits_first']['precision@3']}",
         f"baselines: personal {sg['no_caps']['baseline_personal_frequency']['hit@3']} / "
         f"{sg['no_caps']['baseline_personal_frequency']['precision@3']}, engine without a model "
         f"{sg['caps_on']['engine_today']['hit@3']}", ">= 0.62 / >= 0.29"),
        ("suggestions at the entrance, with discovery (caps on): hit@3 / discovery",
         f"{sg['caps_on']['ranker_with_discovery']['hit@3']} / {sg['caps_on']['ranker_with_discovery']['discovery']}",
         f"engine without a model {sg['caps_on']['engine_today']['hit@3']} / "
         f"{sg['caps_on']['engine_today']['discovery']}", ">= 0.60 / >= 0.07"),
        ("nightly fit of the suggestion model (the year to week 40)",
         f"{sg['fit']['wall_s']} s", f"peak RSS {sg['fit']['peak_rss_mb']} MB", "for reference"),
    ]  # fmt: skip
    hs = r.get("http_server")
    if hs:
        rows[3:3] = [
            (f"checkouts over HTTP ({hs['connections']} keep-alive connections) vs library (FULL)",
             f"{hs['http_checkouts_per_s_median']} vs {hs['library_checkouts_per_s_median']} /s",
             f"ratio {hs['ratio_http_to_library']}", ">= 0.5"),
            (f"HTTP checkout latency at half the maximum ({hs['half_max_rate_per_s']}/s)",
             f"p50 {hs['latency_p50_ms_at_half_max']} ms", f"p99 {hs['latency_p99_ms_at_half_max']} ms, "
             f"server peak RSS {hs['server_peak_rss_mib_latency_run']} MiB", "for reference"),
        ]
    pg = r.get("postgres")
    if pg:
        rows += postgres_rows(pg)
    lines = [f"# anoncard benchmarks ({r['when']})", "", f"Machine: {r['machine']}", "",
             "| measure | value | compared | target |", "|---|---|---|---|"]  # fmt: skip
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines += [
        "",
        "Database bytes per card: " + ", ".join(f"{x['cards']}: {x['db_bytes_per_card']}" for x in sc["rows"]),
    ]
    return "\n".join(lines) + "\n"


def postgres_rows(pg: dict) -> list[tuple[str, str, str, str]]:
    """The PostgreSQL rows of the table (benchmarks/postgres.py: fsync and synchronous_commit on)."""
    rows = []
    tp = pg.get("throughput")
    if tp:
        med = tp["checkouts_per_s_median"]
        for c, ratio in tp["ratio_library_to_raw"].items():
            rows.append((f"PostgreSQL checkout, library vs raw psycopg, {c} connection(s) (durable)",
                         f"{med[f'library_pg_{c}']} vs {med[f'raw_pg_{c}']} /s", f"ratio {ratio}", ">= 0.5"))
        if "ratio_pg_to_sqlite_8_terminals" in tp:
            rows.append(("8 terminal processes, PostgreSQL vs SQLite (FULL), library",
                         f"{med['library_pg_8']} vs {med['library_sqlite_8']} /s",
                         f"ratio {tp['ratio_pg_to_sqlite_8_terminals']}", "for reference"))
    rp = pg.get("replay")
    if rp:
        rows.append((f"replay of the year through PostgreSQL ({rp['terminals']} terminals)",
                     f"{rp['baskets']} baskets in {rp['wall_s']} s ({rp['baskets_per_s']}/s)",
                     f"database {rp['db_mb']} MB", "for reference"))
    sc = pg.get("scale")
    if sc:
        small, big, ratio = sc["rows"][0], sc["rows"][-1], sc["ratio_largest_to_smallest"]
        for q in ("p50", "p99"):
            rows.append((f"PostgreSQL growth {small['cards']} -> {big['cards']} cards, {q} (ratio: median of rounds)",
                         f"enter {small['enter'][f'{q}_ms']} -> {big['enter'][f'{q}_ms']} ms, "
                         f"x{ratio[f'enter_{q}_ms']}",
                         f"checkout {small['checkout'][f'{q}_ms']} -> {big['checkout'][f'{q}_ms']} ms, "
                         f"x{ratio[f'checkout_{q}_ms']}", "<= 1.5"))
    return rows  # fmt: skip


if __name__ == "__main__":
    main()
