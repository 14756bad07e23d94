"""The HTTP transport (``anoncard server``): an ASGI application served by uvicorn.

Design overview. Every operation of :data:`anoncard.protocol.OPERATIONS` is one route
(``POST /v1/checkout`` ...). A request goes:

1. headers: a bearer key of the right form is required (else 401), a declared body over
   :data:`~anoncard.protocol.MAX_REQUEST_BYTES` is refused (413) before a byte of it is
   read; the body is then read counting bytes, and refused once over the limit;
2. one job on a database thread: the key is looked up by its keyed digest (401 when
   unknown or revoked), the terminal's role must reach the operation (403), a terminal
   over its budget of unknown-card answers is refused (429, with ``Retry-After``), the
   body must be declared JSON (415), and then :func:`anoncard.protocol.run` hands it to
   the policy gate and the service - the one validator, no second schema;
3. the answer: 200 and the result object, or the error envelope with the status of its
   code (:data:`anoncard.protocol.STATUS`).

Threads. SQLite connections are not shared across threads: a fixed pool of database
threads each holds one :class:`~anoncard.service.Service` of its own, reopened when the
key ring file changes (a rotation or retirement by any process on this host).

Privacy. What the server counts per terminal (unknown-card answers) and the metrics
(by operation, outcome code, role and refusal rule: closed sets) live in memory only;
nothing stored links a terminal to a card, and no access log is written.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import protocol
from .errors import (
    AnonCardError,
    Forbidden,
    InternalError,
    NotJson,
    PolicyViolation,
    RateLimited,
    Unauthenticated,
    UnknownCard,
)
from .protocol import Context, Operation
from .service import KEYRING_NAME, Service
from .terminals import Terminals, key_bytes

_log = logging.getLogger("anoncard.http")


LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
NO_KEY = Unauthenticated("authorization: a valid terminal key is required (Authorization: Bearer ak1_...)")


class UnknownCardLimit:
    """Per terminal, at most ``limit`` unknown-card answers in any ``window_s`` seconds (code
    guessing); then card operations are refused until the oldest answer leaves the window.
    Counts are kept in memory only, per terminal name, never per card."""

    def __init__(
        self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic, what: str = "card"
    ) -> None:
        self.limit, self.window_s, self.clock, self.what = limit, window_s, clock, what
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, terminal: str, now: float) -> deque[float]:
        seen = self._seen.setdefault(terminal, deque())
        while seen and seen[0] <= now - self.window_s:
            seen.popleft()
        return seen

    def check(self, terminal: str) -> None:
        """Raises RateLimited when the terminal has used up its budget."""
        with self._lock:
            now = self.clock()
            seen = self._recent(terminal, now)
            if len(seen) >= self.limit:
                wait = max(1, int(seen[0] + self.window_s - now + 0.999))
                noun = "recovery codes" if self.what == "recovery" else "cards"
                raise RateLimited(
                    f"{self.what}: at most {self.limit} unknown {noun} per {self.window_s:g} s for one terminal; "
                    f"try again in {wait} s",
                    retry_after=wait,
                )

    def count(self, terminal: str) -> None:
        with self._lock:
            self._recent(terminal, self.clock()).append(self.clock())


def refusal_rule(exc: AnonCardError) -> str:
    """A refusal's rule, from a closed set (never a field name a client chose, never a value)."""
    if exc.code != "policy_violation":
        return exc.code
    message = exc.message
    if "personal data" in message:
        return "personal_data"
    if ": not allowed in" in message:
        return "undeclared_field"
    if ": required" in message:
        return "missing_field"
    if message.startswith("request:"):
        return "not_a_json_object"
    return "value_rule"


class Metrics:
    """Prometheus text exposition of requests, latencies and refusals (updated on the event loop only)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = {}
        self.latency: dict[str, list[float]] = {}  # per operation: bucket counts, then sum, then count
        self.refusals: dict[str, int] = {}

    def observe(self, operation: str, outcome: str, role: str, seconds: float, rule: str | None) -> None:
        key = (operation, outcome, role)
        self.requests[key] = self.requests.get(key, 0) + 1
        hist = self.latency.setdefault(operation, [0.0] * (len(LATENCY_BUCKETS) + 2))
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                hist[i] += 1
        hist[-2] += seconds
        hist[-1] += 1
        if rule is not None:
            self.refusals[rule] = self.refusals.get(rule, 0) + 1

    def render(self) -> str:
        out = [
            "# HELP anoncard_requests_total Requests by operation, outcome (ok or error code) and role.",
            "# TYPE anoncard_requests_total counter",
        ]
        for (op, outcome, role), n in sorted(self.requests.items()):
            out.append(f'anoncard_requests_total{{operation="{op}",outcome="{outcome}",role="{role}"}} {n}')
        out += [
            "# HELP anoncard_request_seconds Time to answer a request, by operation.",
            "# TYPE anoncard_request_seconds histogram",
        ]
        for op, hist in sorted(self.latency.items()):
            for bound, n in zip(LATENCY_BUCKETS, hist, strict=False):
                out.append(f'anoncard_request_seconds_bucket{{operation="{op}",le="{bound:g}"}} {int(n)}')
            out.append(f'anoncard_request_seconds_bucket{{operation="{op}",le="+Inf"}} {int(hist[-1])}')
            out.append(f'anoncard_request_seconds_sum{{operation="{op}"}} {hist[-2]:.6f}')
            out.append(f'anoncard_request_seconds_count{{operation="{op}"}} {int(hist[-1])}')
        out += [
            "# HELP anoncard_refusals_total Refused requests by rule.",
            "# TYPE anoncard_refusals_total counter",
        ]
        out += [f'anoncard_refusals_total{{rule="{rule}"}} {n}' for rule, n in sorted(self.refusals.items())]
        return "\n".join(out) + "\n"


class ServicePool:
    """A fixed pool of database threads, each with one Service of its own."""

    def __init__(self, home: Path, threads: int, *, synchronous: str, clock: Callable[[], datetime]) -> None:
        self.home, self.threads, self.synchronous, self.clock = Path(home), threads, synchronous, clock
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="anoncard-db")
        self._local = threading.local()

    def context(self) -> Context:
        """This thread's context, reopened when the key ring file was replaced since it was opened."""
        st = os.stat(self.home / KEYRING_NAME)
        signature = (st.st_ino, st.st_mtime_ns, st.st_size)
        held = getattr(self._local, "held", None)
        if held is None or held[1] != signature:
            if held is not None:
                held[0].svc.close()
                self._local.held = None
            svc = Service.open(self.home, clock=self.clock, synchronous=self.synchronous)
            self._local.held = (Context(svc, self.home), signature)
        return self._local.held[0]

    async def call(self, fn: Callable, *args: object):
        return await asyncio.get_running_loop().run_in_executor(self.executor, functools.partial(fn, *args))

    def _close_own(self, barrier: threading.Barrier) -> None:
        barrier.wait(timeout=10)  # one job per thread: every thread closes its own connection
        held = getattr(self._local, "held", None)
        if held is not None:
            held[0].svc.close()
            self._local.held = None

    def close(self) -> None:
        barrier = threading.Barrier(self.threads)
        jobs = [self.executor.submit(self._close_own, barrier) for _ in range(self.threads)]
        for job in jobs:
            job.result()
        self.executor.shutdown()


def bearer(header: str | None) -> str:
    """The key of an ``Authorization: Bearer`` header, or Unauthenticated (missing or malformed)."""
    if header is None or not header.startswith("Bearer "):
        raise NO_KEY
    key = header[7:].strip()
    if key_bytes(key) is None:
        raise NO_KEY
    return key


def _is_json(content_type: str | None) -> bool:
    return content_type is not None and content_type.split(";", 1)[0].strip().lower() == "application/json"


async def read_body(request: Request) -> bytes:
    """The body, or RequestTooLarge: a declared length over the limit is refused before reading,
    and the bytes that arrive are counted, so no more than the limit is ever held."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > protocol.MAX_REQUEST_BYTES:
        raise protocol.too_large()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > protocol.MAX_REQUEST_BYTES:
            raise protocol.too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def _error_response(exc: AnonCardError) -> JSONResponse:
    headers = {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(protocol.envelope(exc), status_code=protocol.status(exc.code), headers=headers)


class Server:
    """The application's state: the pool, the unknown-card limit and the metrics."""

    def __init__(self, pool: ServicePool, limit: UnknownCardLimit, recovery_limit: UnknownCardLimit) -> None:
        self.pool, self.limit, self.recovery_limit, self.metrics = pool, limit, recovery_limit, Metrics()
        self._openapi: bytes | None = None

    def execute(self, op: Operation, key: str, body: bytes, is_json: bool) -> tuple[str, dict | AnonCardError]:
        """On a database thread: authenticate, authorise, limit, decode, run. Returns the role and the result."""
        role = "none"
        try:
            ctx = self.pool.context()
            terminal = Terminals(ctx.svc).authenticate(key)
            role = terminal.role
            if role not in op.roles:
                raise Forbidden(f"role: the {role} role does not reach {op.method} {op.path}")
            limit = self.recovery_limit if op.recovery else self.limit
            if op.card:
                limit.check(terminal.name)
            if body and not is_json:
                raise NotJson("request: the body must be JSON (Content-Type: application/json)", field="input")
            request = protocol.decode(body) if body else {}
            try:
                return role, protocol.to_dict(protocol.run(op, ctx, request))
            except UnknownCard:
                limit.count(terminal.name)
                raise
        except AnonCardError as exc:
            return role, exc

    def endpoint(self, op: Operation):
        async def answer(request: Request) -> Response:
            started = time.perf_counter()
            role = "none"
            try:
                key = bearer(request.headers.get("authorization"))
                body = await read_body(request) if op.method == "POST" else b""
                role, result = await self.pool.call(
                    self.execute, op, key, body, _is_json(request.headers.get("content-type"))
                )
            except AnonCardError as exc:
                result = exc
            except Exception:  # a defect, not a refusal: the transaction was rolled back
                _log.exception("internal error in %s", op.name)
                result = InternalError("server: internal error (see the server's log)")
            if isinstance(result, AnonCardError):
                response: Response = _error_response(result)
                outcome, rule = result.code, refusal_rule(result)
            else:
                response, outcome, rule = JSONResponse(result), "ok", None
            self.metrics.observe(op.name, outcome, role, time.perf_counter() - started, rule)
            return response

        return answer

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics_text(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4")

    async def openapi(self, request: Request) -> Response:
        if self._openapi is None:
            from . import openapi

            def build() -> bytes:
                return openapi.document_bytes(self.pool.context().svc.policy)

            self._openapi = await self.pool.call(build)
        return Response(self._openapi, media_type="application/json")


async def _not_found(request: Request, exc: Exception) -> Response:
    return JSONResponse(
        {"error": {"code": "not_found", "message": "path: no such operation (see /openapi.json)"}}, status_code=404
    )


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    return JSONResponse(
        {"error": {"code": "method_not_allowed", "message": "method: not allowed on this path (see /openapi.json)"}},
        status_code=405,
    )


def create_app(
    home: Path,
    *,
    threads: int = 4,
    synchronous: str = "FULL",
    clock: Callable[[], datetime] = datetime.now,
    unknown_card_limit: int = 30,
    unknown_card_window_s: float = 60.0,
    recovery_limit: int = 5,
    recovery_window_s: float = 600.0,
    monotonic: Callable[[], float] = time.monotonic,
    kiosk_page: bool = True,
    kiosk_idle_s: float = 120.0,
) -> Starlette:
    """The ASGI application over one home. Time and the limits are injected for tests.

    Two budgets of refusals per terminal, in memory: ``unknown_card_limit`` unknown cards per
    ``unknown_card_window_s``, and ``recovery_limit`` unknown recovery codes per
    ``recovery_window_s`` (a code replaces a card, so its guesses get the tighter budget).
    ``kiosk_page`` serves the card holders' page under ``/kiosk`` (:mod:`anoncard.kiosk`).
    """
    pool = ServicePool(home, threads, synchronous=synchronous, clock=clock)
    server = Server(
        pool,
        UnknownCardLimit(unknown_card_limit, unknown_card_window_s, monotonic),
        UnknownCardLimit(recovery_limit, recovery_window_s, monotonic, what="recovery"),
    )
    routes = [Route(op.path, server.endpoint(op), methods=[op.method]) for op in protocol.OPERATIONS]
    if kiosk_page:
        from .kiosk import Kiosk

        routes += Kiosk(server, idle_s=kiosk_idle_s, clock=monotonic).routes()
    routes += [
        Route("/healthz", server.healthz, methods=["GET"]),
        Route("/metrics", server.metrics_text, methods=["GET"]),
        Route("/openapi.json", server.openapi, methods=["GET"]),
    ]

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        pool.close()

    handlers = {404: _not_found, 405: _method_not_allowed}
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    app.state.server = server
    return app


def app_from_env() -> Starlette:
    """The application for ``uvicorn --factory`` (one per worker process): the home from ANONCARD_HOME."""
    env = os.environ
    return create_app(
        Path(env["ANONCARD_HOME"]),
        threads=int(env.get("ANONCARD_SERVER_THREADS", "4")),
        unknown_card_limit=int(env.get("ANONCARD_SERVER_UNKNOWN_CARD_LIMIT", "30")),
        unknown_card_window_s=float(env.get("ANONCARD_SERVER_UNKNOWN_CARD_WINDOW_S", "60")),
        kiosk_idle_s=float(env.get("ANONCARD_SERVER_KIOSK_IDLE_S", "120")),
    )


def uvicorn_options(
    *, tls_cert: str | None, tls_key: str | None, client_ca: str | None
) -> dict[str, object]:
    """uvicorn's TLS settings, or PolicyViolation when they do not fit together."""
    if (tls_cert is None) != (tls_key is None):
        raise PolicyViolation("field 'tls-key': --tls-cert and --tls-key go together", field="tls-key")
    if client_ca is not None and tls_cert is None:
        raise PolicyViolation("field 'client-ca': mutual TLS needs --tls-cert and --tls-key", field="client-ca")
    options: dict[str, object] = {}
    if tls_cert is not None:
        options |= {"ssl_certfile": tls_cert, "ssl_keyfile": tls_key}
    if client_ca is not None:
        options |= {"ssl_ca_certs": client_ca, "ssl_cert_reqs": ssl.CERT_REQUIRED}
    return options


def serve(
    home: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8443,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    client_ca: str | None = None,
    workers: int = 1,
    threads: int = 4,
    unknown_card_limit: int = 30,
    unknown_card_window_s: float = 60.0,
) -> None:
    """Run the server until interrupted. The home is opened once first, so a broken one fails here.

    Raises:
        AnonCardError: the home cannot be opened, or the TLS options do not fit together.
    """
    import uvicorn

    options = uvicorn_options(tls_cert=tls_cert, tls_key=tls_key, client_ca=client_ca)
    Service.open(home).close()
    os.environ["ANONCARD_HOME"] = str(Path(home).resolve())
    os.environ["ANONCARD_SERVER_THREADS"] = str(threads)
    os.environ["ANONCARD_SERVER_UNKNOWN_CARD_LIMIT"] = str(unknown_card_limit)
    os.environ["ANONCARD_SERVER_UNKNOWN_CARD_WINDOW_S"] = str(unknown_card_window_s)
    uvicorn.run(
        "anoncard.http:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        server_header=False,
        log_level="warning",
        **options,
    )
