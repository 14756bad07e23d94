"""A server that is up but failing: every request is answered with one status and the contract's envelope.

python tests/failing_server.py PORT STATUS

It stands for the store server answering 503 store_error (busy, disk full) or 500, which the
real server gives only under conditions a test cannot cheaply make; ``Retry-After: 1`` goes
with 429 and 503 as the contract says.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

CODES = {503: "store_error", 429: "rate_limited", 500: "internal_error"}


def main() -> None:
    port, status = int(sys.argv[1]), int(sys.argv[2])
    body = json.dumps({"error": {"code": CODES.get(status, "error"), "message": "store: busy, retry later"}}).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if status in (429, 503):
                self.send_header("Retry-After", "1")
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST

    HTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
