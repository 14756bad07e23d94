"""A one-shot checkout does not pay for what it does not use."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from anoncard import Service

HEAVY = ["sqlite_utils", "qrcode", "png", "pandas", "cryptography", "phonenumbers", "email_validator", "tempfile"]


@pytest.mark.sqlite_only(reason="on PostgreSQL the driver (psycopg) is an import a checkout needs")
def test_one_shot_checkout_imports_nothing_heavy(home):
    with Service.open(home) as svc:
        code = svc.issue_cards({"count": 1})[0].code
    script = (
        "import sys, json\n"
        "from cli.main import main\n"
        "try:\n"
        f"    main(['--home', {str(home)!r}, 'checkout', '--card', {code!r}, '--txn', 'store7-till3-000123',"
        " '--line', 'dairy=3.49', '--line', 'coffee=7.99'])\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert "points +11" in out.stdout
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
