"""The JSON-lines transport for long-lived terminal processes (``anoncard serve``).

One request per line, one response per line, in order::

    {"op": "checkout", "card": "C1-...", "txn": "s7-t3-000123", "lines": [...]}
    {"ok": true, "result": {"kind": "checkout", "points": 11, ...}}
    {"ok": false, "error": {"code": "policy_violation", "message": "field 'email': not allowed ..."}}

``op`` names the operation (see :data:`anoncard.protocol.SERVE_OPS`); every other field
is the request itself, handled by :mod:`anoncard.protocol` exactly as the CLI and the HTTP
server handle it. A bad line gets an error response; the stream goes on. A line over
:data:`anoncard.protocol.MAX_REQUEST_BYTES` is refused without being held in memory.
"""

from __future__ import annotations

import json
from typing import IO

from . import protocol
from .errors import AnonCardError, PolicyViolation
from .protocol import Context

_OPS_TEXT = ", ".join(protocol.SERVE_OPS)


def parse(line: bytes | str | None) -> dict:
    """One request line as a dict, or PolicyViolation naming what is wrong with it."""
    if line is None or len(line) > protocol.MAX_REQUEST_BYTES:
        raise protocol.too_large()
    request = protocol.decode(line)
    if not isinstance(request, dict):
        raise PolicyViolation("request: must be a JSON object", field="input")
    return request


def handle(ctx: Context, line: bytes | str | None) -> str:
    """Answer one request line (``None``: a line over the limit) with one response line, without the newline."""
    try:
        request = parse(line)
        name = request.pop("op", None)
        op = protocol.SERVE_OPS.get(name) if isinstance(name, str) else None
        if op is None:
            raise PolicyViolation(f"field 'op': must be one of {_OPS_TEXT}", field="op")
        result = protocol.run(op, ctx, request)
        return json.dumps({"ok": True, "result": protocol.to_dict(result)}, separators=(",", ":"))
    except AnonCardError as exc:
        return json.dumps({"ok": False, **protocol.envelope(exc)}, separators=(",", ":"))


def run(ctx: Context, stdin: IO[bytes], stdout: IO[str]) -> None:
    """Answer every non-blank line of ``stdin`` on ``stdout``, flushing after each."""
    for line in protocol.bounded_lines(stdin):
        if line is not None and not line.strip():
            continue
        stdout.write(handle(ctx, line) + "\n")
        stdout.flush()
