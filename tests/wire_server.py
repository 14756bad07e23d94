"""A small HTTP server speaking the terminal half of the wire contract over a real home, for the client tests.

ANONCARD_TILL_KEY=KEY python tests/wire_server.py HOME PORT [--fail-with STATUS] [--tls CERT KEY]

The terminal operations (``POST /v1/<op>``) go through the real service (gate, key ring,
SQLite); the bearer key is compared in constant time; errors use the contract's envelope
and statuses. ``--fail-with 503`` answers every request with that status instead, to
show how the client treats a server that is up but failing; ``--tls`` serves https. Prints ``ready`` when it
listens.
"""

from __future__ import annotations

import hmac
import json
import os
import ssl
import sys
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from anoncard import Service  # noqa: E402
from anoncard.errors import AnonCardError, CouponError, LedgerError, PolicyViolation, UnknownCard  # noqa: E402

STATUS = {PolicyViolation: 400, UnknownCard: 404, LedgerError: 409, CouponError: 409}
OPS = ("checkout", "refund", "redeem", "balance", "enter")


def status_of(exc: AnonCardError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400 if exc.code == "card_error" else 503


def serve(home: Path, port: int, key: str, fail_with: int | None, tls: tuple[str, str] | None) -> None:
    lock = threading.Lock()
    local = threading.local()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def answer(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status in (429, 503):
                self.send_header("Retry-After", "1")
            self.end_headers()
            self.wfile.write(data)

        def refuse(self, status: int, code: str, message: str) -> None:
            self.answer(status, {"error": {"code": code, "message": message}})

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if fail_with is not None:
                return self.refuse(fail_with, "store_error", "store: busy, retry later")
            given = self.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
                return self.refuse(401, "unauthenticated", "authorization: a valid terminal key is required")
            op = self.path.removeprefix("/v1/")
            if op not in OPS:
                return self.refuse(404, "not_found", "path: no such operation")
            try:
                request = json.loads(raw)
                at = request.pop("at", None)
                when = datetime.fromisoformat(at) if isinstance(at, str) and op in ("checkout", "refund") else None
                if at is not None and when is None:
                    raise PolicyViolation("field 'at': must be an ISO 8601 datetime", field="at")
                if not hasattr(local, "svc"):
                    local.svc = Service.open(home)
                with lock:
                    result = getattr(local.svc, op)(request, at=when)
            except AnonCardError as exc:
                return self.refuse(status_of(exc), exc.code, exc.message)
            except ValueError:
                return self.refuse(400, "policy_violation", "request: not valid JSON")
            self.answer(200, result.to_dict())

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    args = sys.argv[1:]
    fail = int(args[args.index("--fail-with") + 1]) if "--fail-with" in args else None
    tls = (args[args.index("--tls") + 1], args[args.index("--tls") + 2]) if "--tls" in args else None
    serve(Path(args[0]), int(args[1]), os.environ["ANONCARD_TILL_KEY"], fail, tls)
