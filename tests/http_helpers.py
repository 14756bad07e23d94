"""A live store server for tests: uvicorn on 127.0.0.1, a free port, in a thread of the test process."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from anoncard import Service
from anoncard.http import create_app
from anoncard.terminals import Terminals


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(home: Path, *, tls: dict | None = None, **app_options):
    """Yield the base URL of a server over ``home``; stopped (and its threads closed) afterwards."""
    app = create_app(home, **app_options)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                            lifespan="on", **(tls or {}))  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def add_terminals(home: Path, **roles: str) -> dict[str, str]:
    """Add terminals ``name=role``; returns name -> bearer key."""
    with Service.open(home) as svc:
        terminals = Terminals(svc)
        return {name.replace("_", "-"): terminals.add(name.replace("_", "-"), role)[1] for name, role in roles.items()}
