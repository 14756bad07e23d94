"""Entrance and long-lived terminals through the CLI: enter, checkout --coupon, serve."""

from __future__ import annotations

import json

from click.testing import CliRunner

from cli.main import main


def cli(home, *args, input=None):
    return CliRunner().invoke(main, ["--home", str(home), *args], input=input)


def regular_customer(tmp_path):
    home = tmp_path / "home"
    assert cli(home, "init").exit_code == 0
    code = cli(home, "card", "issue").output.split()[0]
    for i in range(3):
        r = cli(home, "checkout", "--card", code, "--txn", f"h{i}", "--line", "dairy=2.49", "--line", "coffee=6.99")
        assert r.exit_code == 0, r.output
    return home, code


def test_enter_prints_coupons_with_qr_files_and_checkout_redeems_one(tmp_path):
    home, code = regular_customer(tmp_path)
    qr_dir = tmp_path / "qr"
    result = cli(home, "enter", "--card", code, "--json", "--qr-dir", str(qr_dir), "--qr-format", "svg")
    assert result.exit_code == 0, result.output
    coupons = json.loads(result.output)["coupons"]
    assert 1 <= len(coupons) <= 3
    assert all(c["new"] and c["code"].startswith("K1") for c in coupons)
    assert sorted(p.name for p in qr_dir.iterdir()) == [f"coupon-{i:02d}.svg" for i in range(1, len(coupons) + 1)]
    dairy = next(c for c in coupons if c["category"] == "dairy")
    r = cli(home, "checkout", "--card", code, "--txn", "c1", "--line", "dairy=2.49", "--coupon", dairy["code"])
    assert r.exit_code == 0, r.output
    assert "coupon dairy: -0.24 EUR" in r.output
    again = cli(home, "checkout", "--card", code, "--txn", "c2", "--line", "dairy=2.49", "--coupon", dairy["code"])
    assert again.exit_code == 11
    assert again.stderr.startswith("Error: field 'coupons': the dairy coupon was already used")
    key = cli(home, "coupons", "public-key", "--json")
    assert len(json.loads(key.output)["ed25519_public_key"]) == 44


def test_serve_answers_each_line_in_order(tmp_path):
    home, code = regular_customer(tmp_path)
    lines = [
        {"op": "balance", "card": code},
        {"op": "checkout", "card": code, "txn": "s1", "lines": [{"category": "dairy", "amount": "1.00"}]},
        {"op": "checkout", "card": code, "txn": "s1", "lines": [{"category": "dairy", "amount": "1.00"}]},
        {"op": "checkout", "card": code, "txn": "s2", "name": "Erika", "lines": []},
        {"op": "export", "card": code},
        {"op": "enter", "card": code},
    ]
    stdin = "\n".join(json.dumps(x) for x in lines) + "\nnot json\n"
    result = cli(home, "serve", input=stdin)
    assert result.exit_code == 0
    out = [json.loads(x) for x in result.output.splitlines()]
    assert len(out) == len(lines) + 1
    assert out[0]["ok"] and out[0]["result"]["points"] == 27
    assert out[1]["result"]["replayed"] is False and out[2]["result"]["replayed"] is True
    assert out[3]["error"]["message"].startswith("field 'name': not allowed")
    assert out[4]["error"]["message"].startswith("field 'op'")
    assert out[5]["ok"] and out[5]["result"]["coupons"]
    assert out[6] == {"ok": False, "error": {"code": "policy_violation", "message": "request: not valid UTF-8 JSON"}}
