"""The JSON-lines protocol for long-lived terminal processes (``anoncard serve``).

One request per line, one response per line, in order::

    {"op": "checkout", "card": "C1-...", "txn": "s7-t3-000123", "lines": [...]}
    {"ok": true, "result": {"kind": "checkout", "points": 11, ...}}
    {"ok": false, "error": {"code": "policy_violation", "message": "field 'email': not allowed ..."}}

``op`` names the operation and ``at`` (optional, ISO date) the day for replays; every
other field is the request itself and passes the same gate as the CLI and the
library. A bad line gets an error response; the stream goes on.
"""

from __future__ import annotations

import json
from datetime import datetime

from .errors import AnonCardError, PolicyViolation
from .service import Service

MAX_LINE_BYTES = 1 << 20
OPS = ("checkout", "refund", "balance", "redeem", "enter")


def _reject_constant(name: str) -> None:
    raise PolicyViolation(f"request: {name} is not allowed in JSON input", field="input")


def decode(data: bytes | str) -> object:
    """A JSON document, or PolicyViolation: not UTF-8, not JSON, NaN/Infinity, nested too
    deeply, or an integer too long for Python to read (over 4300 digits)."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise PolicyViolation("request: not valid UTF-8 JSON", field="input") from None


def parse(line: bytes | str) -> dict:
    """One request line as a dict, or PolicyViolation naming what is wrong with it."""
    if len(line) > MAX_LINE_BYTES:
        raise PolicyViolation(f"request: a line is at most {MAX_LINE_BYTES} bytes", field="input")
    request = decode(line)
    if not isinstance(request, dict):
        raise PolicyViolation("request: must be a JSON object", field="input")
    return request


def handle(svc: Service, line: bytes | str) -> str:
    """Answer one request line with one response line (without the newline)."""
    try:
        request = parse(line)
        op = request.pop("op", None)
        if op not in OPS:
            raise PolicyViolation(f"field 'op': must be one of {', '.join(OPS)}", field="op")
        at = request.pop("at", None)
        when = None
        if at is not None:
            try:
                when = datetime.fromisoformat(at) if isinstance(at, str) else None
            except ValueError:
                when = None
            if when is None:
                raise PolicyViolation("field 'at': must be an ISO date such as 2026-11-22", field="at")
        result = getattr(svc, op)(request, at=when)
        return json.dumps({"ok": True, "result": result.to_dict()}, separators=(",", ":"))
    except AnonCardError as exc:
        return json.dumps({"ok": False, "error": {"code": exc.code, "message": exc.message}}, separators=(",", ":"))
