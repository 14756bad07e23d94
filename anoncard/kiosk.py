"""The card holders' page of the store server (``/kiosk``): plain server-rendered HTML.

Design overview. A kiosk in the store (or a holder's phone on the store's network) shows this
page; it needs no internet and loads nothing from elsewhere (one style sheet from this server,
no script at all). What it offers: enter a card code, see the balance and everything stored
under the card, download it (``anoncard-export/1``), erase the card with a confirmation step,
replace a lost card with the recovery code from its stub, and read what the card stores and
never stores (German and English, printable for the card sleeve).

Who may use it. The browser never holds a bearer key: the kiosk *device* signs in once at
``/kiosk/login`` with its terminal key (role ``kiosk``), which sets a random session id in a
cookie that is ``HttpOnly`` (no script can read it), ``SameSite=Strict`` (no other site's page
can send it) and ``Path=/kiosk``, valid for ``terminal_s`` (a shift); the terminal is checked
again on every request, so revoking it ends its sessions. Every form is a POST to this origin
(the ``Origin`` header, when sent, must be this server).

What the browser keeps: nothing of a card. The card code travels only in POST bodies, never in
a URL; the card session is held in this process's memory only, keyed by the terminal session,
and dropped on "Done", on an erasure, and after ``idle_s`` without a request (the page itself
goes to ``/kiosk/timeout`` then, by a meta refresh). Every answer says ``Cache-Control:
no-store`` (no page, no download in the browser's cache), inputs say ``autocomplete="off"``,
and a strict Content-Security-Policy allows nothing but this server's style sheet and forms.
The unknown-card and unknown-recovery-code budgets of the HTTP server apply per terminal.
"""

from __future__ import annotations

import html
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from . import cards
from .errors import AnonCardError, PolicyViolation, Unauthenticated, UnknownCard
from .money import format_cents
from .programme_text import PROGRAMME_TEXT

COOKIE = "anoncard_kiosk"
MAX_FORM_BYTES = 4096
SECURITY_HEADERS = {
    "Cache-Control": "no-store, max-age=0",
    "Pragma": "no-cache",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # (no-referrer would make a browser send "Origin: null" on our own forms)
    "X-Frame-Options": "DENY",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}

CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; font: 1.125rem/1.5 system-ui, sans-serif; color: #111; background: #fff; }
header { background: #0b3d91; color: #fff; padding: .75rem 1rem; }
header a { color: #fff; }
main { max-width: 60rem; margin: 0 auto; padding: 1rem; }
h1 { font-size: 1.6rem; margin: .25rem 0; }
h2 { font-size: 1.3rem; margin-top: 1.5rem; border-bottom: 2px solid #0b3d91; }
label { display: block; font-weight: 600; margin: .75rem 0 .25rem; }
input[type=text], input[type=password] { width: 100%; font: inherit; padding: .7rem; border: 2px solid #333;
  border-radius: .3rem; letter-spacing: .05em; text-transform: uppercase; }
input[type=password] { text-transform: none; }
button, .button { display: inline-block; min-height: 3rem; min-width: 8rem; margin: .5rem .5rem .5rem 0;
  padding: .6rem 1.2rem; font: inherit; font-weight: 600; color: #fff; background: #0b3d91;
  border: 2px solid #0b3d91; border-radius: .3rem; text-decoration: none; cursor: pointer; }
button.danger { background: #a30000; border-color: #a30000; }
button.quiet, .button.quiet { background: #fff; color: #0b3d91; }
:focus-visible { outline: 4px solid #f5b700; outline-offset: 2px; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0; font-size: 1rem; }
th, td { text-align: left; padding: .4rem .5rem; border-bottom: 1px solid #bbb; vertical-align: top; }
th { background: #eef2fa; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.balance { font-size: 2rem; font-weight: 700; }
.error { border: 3px solid #a30000; background: #fff0f0; padding: .75rem; margin: 1rem 0; }
.note { border-left: 6px solid #0b3d91; background: #eef2fa; padding: .75rem; }
.code { font-family: ui-monospace, monospace; font-size: 1.4rem; font-weight: 700; word-break: break-all; }
fieldset { border: 2px solid #333; border-radius: .3rem; margin: 1rem 0; }
fieldset label { display: flex; gap: .5rem; align-items: center; font-weight: 400; min-height: 2.5rem; }
input[type=radio], input[type=checkbox] { width: 1.5rem; height: 1.5rem; }
@media print { header, form, .noprint { display: none; } body { font-size: 11pt; } }
"""


@dataclass(slots=True)
class _TerminalSession:
    name: str
    expires: float


@dataclass(slots=True)
class _CardSession:
    secret: cards.CardSecret
    last_seen: float


class Sessions:
    """Terminal sessions (a signed-in kiosk device) and, per terminal session, at most one card
    session, in memory only. A card session ends ``idle_s`` after its last request."""

    def __init__(self, idle_s: float, terminal_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_s, self.terminal_s, self.clock = idle_s, terminal_s, clock
        self._terminals: dict[str, _TerminalSession] = {}
        self._cards: dict[str, _CardSession] = {}
        self._lock = threading.Lock()

    def open_terminal(self, name: str) -> str:
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._terminals[sid] = _TerminalSession(name, self.clock() + self.terminal_s)
        return sid

    def terminal(self, sid: str | None) -> str | None:
        """The terminal name of a live terminal session."""
        with self._lock:
            t = self._terminals.get(sid or "")
            if t is None:
                return None
            if t.expires <= self.clock():
                del self._terminals[sid]
                self._cards.pop(sid, None)
                return None
            return t.name

    def end_terminal(self, sid: str) -> None:
        with self._lock:
            self._terminals.pop(sid, None)
            self._cards.pop(sid, None)

    def hold_card(self, sid: str, secret: cards.CardSecret) -> None:
        with self._lock:
            self._cards[sid] = _CardSession(secret, self.clock())

    def card(self, sid: str) -> cards.CardSecret | None:
        """The card of this terminal session, if it was used within ``idle_s`` (which renews it)."""
        with self._lock:
            c = self._cards.get(sid)
            if c is None:
                return None
            now = self.clock()
            if now - c.last_seen >= self.idle_s:
                del self._cards[sid]
                return None
            c.last_seen = now
            return c.secret

    def drop_card(self, sid: str) -> None:
        with self._lock:
            self._cards.pop(sid, None)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def page(title: str, body: str, *, refresh: float | None = None, status: int = 200, lang: str = "en") -> Response:
    """One page with the security headers; ``refresh`` sends the browser to the timeout page after that many
    seconds without a request (no script needed)."""
    meta = "" if refresh is None else f'<meta http-equiv="refresh" content="{int(refresh)};url=/kiosk/timeout">'
    text = f"""<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">{meta}
<title>{_e(title)} - anoncard</title><link rel="stylesheet" href="/kiosk/kiosk.css"></head>
<body><header><strong>anoncard</strong> &middot; your card, your data
&middot; <a href="/kiosk/about">What the card stores / Was die Karte speichert</a></header>
<main id="main"><h1>{_e(title)}</h1>
{body}
</main></body></html>"""
    return HTMLResponse(text, status_code=status, headers=SECURITY_HEADERS)


def _error(exc: AnonCardError) -> str:
    return f'<p class="error" role="alert">{_e(exc.message)}</p>'


def _form(action: str, inner: str, *, button: str, cls: str = "") -> str:
    klass = f' class="{cls}"' if cls else ""
    return (f'<form method="post" action="{action}" autocomplete="off">{inner}'
            f"<button{klass}>{_e(button)}</button></form>")


def _done_form() -> str:
    return _form("/kiosk/done", "", button="Done - forget this session", cls="quiet")


def _table(head: list[str], rows: list[list[object]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    if not rows:
        return "<p>None stored.</p>"
    ths = "".join(f'<th scope="col"{" class=num" if i in numeric else ""}>{_e(h)}</th>' for i, h in enumerate(head))
    trs = "".join(
        "<tr>" + "".join(f'<td{" class=num" if i in numeric else ""}>{_e(v)}</td>' for i, v in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{ths}</tr></thead><tbody>{trs}</tbody></table>"


def overview(doc: dict[str, Any], idle_s: float) -> str:
    """The body of the card page: balance, documents, history by day and category, coupons,
    folded totals, and what the policy keeps each for and until when."""
    t, r = doc["tables"], doc["retention"]
    docs = [[d["day"], d["kind"], format_cents(d["spend_cents"]),
             next((e["points"] for e in t["ledger"] if e["txn_id"] == d["id"]), 0), d["item"] or ""]
            for d in t["txns"]]  # fmt: skip
    carried = sum(e["points"] for e in t["ledger"] if e["txn_id"] is None)
    history = [[h["day"], h["category"], format_cents(h["spend_cents"]), h["baskets"]] for h in t["history"]]
    visits = [[v["day"], v["visits"], format_cents(v["spend_cents"])] for v in t["visits"]]
    coupons = [[c["category"], f"{c['kind']} {c['value']}", c["issued_day"], c["expires_day"],
                "used" if c["redeemed_txn"] is not None else "not used"] for c in t["coupons"]]  # fmt: skip
    totals = [[a["category"], format_cents(a["spend_cents"]), a["baskets"]] for a in t["affinity"]]
    kept = [[name, e["purpose"], e["kept"], e["rows"], e["last_until"] or "until the card's key is retired"]
            for name, e in r.items()]  # fmt: skip
    carried_text = f"<p>Carried over from older documents: {carried} points.</p>" if carried else ""
    stub = "yes" if t["recovery"] else "no"
    return f"""
<p>Balance</p><p class="balance" id="balance">{doc["balance"]} points</p>
<p>Visits kept: {doc["visits"]}. Recovery stub on file: {stub}.
This page ends by itself after {int(idle_s)} seconds without a touch.</p>
<div class="noprint">
{_form("/kiosk/export", "", button="Download everything (JSON)")}
<a class="button quiet" href="/kiosk/erase">Forget this card...</a>
{_done_form()}
</div>
<h2 id="documents">Till documents</h2>
{_table(["day", "kind", "spend (EUR)", "points", "gift or reward"], docs, {2, 3})}{carried_text}
<h2 id="history">History by day and category</h2>
{_table(["day", "category", "spend (EUR)", "baskets"], history, {2, 3})}
<h2>Visits by day</h2>
{_table(["day", "visits", "spend (EUR)"], visits, {1, 2})}
<h2>Coupons issued and used</h2>
{_table(["category", "offer", "issued", "expires", "status"], coupons)}
<h2>Folded totals (older history, no dates)</h2>
{_table(["category", "spend (EUR)", "baskets"], totals, {1, 2})}
<h2 id="retention">What is kept, why, and until when</h2>
{_table(["table", "why", "how long (policy)", "rows", "kept until"], kept, {3})}
<p class="note">Policy fingerprint {_e(doc["policy_fingerprint"][:16])}&hellip;; the download holds every
row above, column by column (format {_e(doc["format"])}).</p>"""


class Kiosk:
    """The page's routes over a running :class:`anoncard.http.Server`."""

    def __init__(self, server: Any, *, idle_s: float = 120.0, terminal_s: float = 12 * 3600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.server = server
        self.sessions = Sessions(idle_s, terminal_s, clock)

    # -- plumbing ------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            Route("/kiosk", self.home, methods=["GET"]),
            Route("/kiosk/kiosk.css", self.css, methods=["GET"]),
            Route("/kiosk/about", self.about, methods=["GET"]),
            Route("/kiosk/login", self.login, methods=["POST"]),
            Route("/kiosk/card", self.card_form, methods=["POST"]),
            Route("/kiosk/card", self.card_page, methods=["GET"]),
            Route("/kiosk/export", self.export, methods=["POST"]),
            Route("/kiosk/erase", self.erase_page, methods=["GET"]),
            Route("/kiosk/erase", self.erase, methods=["POST"]),
            Route("/kiosk/replace", self.replace_page, methods=["GET"]),
            Route("/kiosk/replace", self.replace, methods=["POST"]),
            Route("/kiosk/done", self.done, methods=["POST"]),
            Route("/kiosk/timeout", self.timeout, methods=["GET"]),
        ]

    async def _form(self, request: Request) -> dict[str, str]:
        origin = request.headers.get("origin")
        site = request.headers.get("sec-fetch-site")
        if (origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}") or (
            site is not None and site not in ("same-origin", "none")
        ):
            raise PolicyViolation("request: a form of another site is refused", field="input")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise PolicyViolation(f"request: a form is at most {MAX_FORM_BYTES} bytes", field="input")
        try:
            fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=10)
        except (UnicodeDecodeError, ValueError):
            raise PolicyViolation("request: not a form", field="input") from None
        return {k: v[0] for k, v in fields.items()}

    def _run(self, fn: Callable[..., Any], *args: object):
        def job():
            ctx = self.server.pool.context()
            return fn(ctx.svc, *args)

        return self.server.pool.call(job)

    async def _terminal(self, request: Request) -> tuple[str, str] | None:
        """``(session id, terminal name)`` of a signed-in kiosk whose terminal is still active."""
        sid = request.cookies.get(COOKIE)
        name = self.sessions.terminal(sid)
        if name is None:
            return None

        def active(svc) -> bool:
            from .terminals import Terminals

            return any(t.name == name and t.revoked is None and t.role == "kiosk" for t in Terminals(svc).list())

        if not await self._run(active):
            self.sessions.end_terminal(sid)
            return None
        return sid, name

    def _login_page(self, error: str = "", status: int = 200) -> Response:
        inner = ('<label for="key">Kiosk terminal key</label>'
                 '<input type="password" id="key" name="key" required autocomplete="off">')  # fmt: skip
        body = (f"{error}<p>This page is for the store's kiosk. Staff: sign the kiosk in with its terminal key "
                f"(role kiosk).</p>{_form('/kiosk/login', inner, button='Sign in')}")  # fmt: skip
        return page("Sign in the kiosk", body, status=status)

    def _card_entry(self, error: str = "", status: int = 200) -> Response:
        inner = ('<label for="card">Your card code (C1-...), typed or scanned</label>'
                 '<input type="text" id="card" name="card" required autocomplete="off" autocapitalize="characters"'
                 ' spellcheck="false" inputmode="text" autofocus>')  # fmt: skip
        body = (f"{error}<p>See everything stored under your card, take it with you, erase it, "
                f"or replace a lost card. No name, no account: your card is the key.</p>"
                f"{_form('/kiosk/card', inner, button='Show my card')}"
                f'<p><a class="button quiet" href="/kiosk/replace">Lost your card? Replace it</a></p>')
        return page("Your card", body, status=status)

    # -- pages ---------------------------------------------------------------------

    async def css(self, request: Request) -> Response:
        return Response(CSS, media_type="text/css", headers=SECURITY_HEADERS)

    async def about(self, request: Request) -> Response:
        return page("What the card stores - Was die Karte speichert", PROGRAMME_TEXT)

    async def home(self, request: Request) -> Response:
        signed = await self._terminal(request)
        if signed is None:
            return self._login_page()
        if self.sessions.card(signed[0]) is not None:
            return RedirectResponse("/kiosk/card", status_code=303, headers=SECURITY_HEADERS)
        return self._card_entry()

    async def login(self, request: Request) -> Response:
        try:
            form = await self._form(request)

            def check(svc):
                from .terminals import Terminals

                return Terminals(svc).authenticate(form.get("key", "").strip())

            terminal = await self._run(check)
            if terminal.role != "kiosk":
                raise Unauthenticated("authorization: this page takes a kiosk terminal's key")
        except AnonCardError as exc:
            return self._login_page(_error(exc), status=401 if isinstance(exc, Unauthenticated) else 400)
        sid = self.sessions.open_terminal(terminal.name)
        response = RedirectResponse("/kiosk", status_code=303, headers=SECURITY_HEADERS)
        response.set_cookie(COOKIE, sid, max_age=int(self.sessions.terminal_s), path="/kiosk", httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")  # fmt: skip
        return response

    async def card_form(self, request: Request) -> Response:
        signed = await self._terminal(request)
        if signed is None:
            return self._login_page(status=401)
        sid, name = signed
        try:
            form = await self._form(request)
            self.server.limit.check(name)
            secret = cards.decode(form.get("card", ""))

            def present(svc):
                from .selfservice import Holder

                return Holder(svc).export({"card": secret.code})

            try:
                await self._run(present)
            except UnknownCard:
                self.server.limit.count(name)
                raise
        except AnonCardError as exc:
            return self._card_entry(_error(exc), status=400)
        self.sessions.hold_card(sid, secret)
        return RedirectResponse("/kiosk/card", status_code=303, headers=SECURITY_HEADERS)

    async def _with_card(self, request: Request) -> tuple[str, cards.CardSecret] | Response:
        signed = await self._terminal(request)
        if signed is None:
            return self._login_page(status=401)
        secret = self.sessions.card(signed[0])
        if secret is None:
            return self._card_entry(
                '<p class="note" role="status">Enter your card code (the last session ended).</p>'
            )
        return signed[0], secret

    async def _export(self, secret: cards.CardSecret) -> dict[str, Any]:
        def run(svc):
            from .selfservice import Holder

            return Holder(svc).export({"card": secret.code})

        return await self._run(run)

    async def card_page(self, request: Request) -> Response:
        held = await self._with_card(request)
        if isinstance(held, Response):
            return held
        try:
            doc = await self._export(held[1])
        except AnonCardError as exc:
            self.sessions.drop_card(held[0])
            return self._card_entry(_error(exc))
        idle = self.sessions.idle_s
        return page("Your card", overview(doc, idle), refresh=idle)

    async def export(self, request: Request) -> Response:
        held = await self._with_card(request)
        if isinstance(held, Response):
            return held
        try:
            await self._form(request)
            doc = await self._export(held[1])
        except AnonCardError as exc:
            return page("Your card", _error(exc), status=400)
        headers = SECURITY_HEADERS | {"Content-Disposition": 'attachment; filename="anoncard-export.json"'}
        return Response(json.dumps(doc, indent=2), media_type="application/json", headers=headers)

    async def erase_page(self, request: Request) -> Response:
        held = await self._with_card(request)
        if isinstance(held, Response):
            return held
        doc = await self._export(held[1])

        def rewards(svc):
            return sorted(svc.programme.rewards.values(), key=lambda r: r.points)

        affordable = [r for r in await self._run(rewards) if r.points <= doc["balance"]]
        choices = ['<label><input type="radio" name="points" value="forfeit" checked> '
                   f'Forfeit my {doc["balance"]} points</label>']  # fmt: skip
        choices += [
            f'<label><input type="radio" name="points" value="reward:{_e(r.name)}"> Redeem {r.points} points for '
            f"{_e(r.name)} first (forfeit the other {doc['balance'] - r.points})</label>"
            for r in affordable
        ]
        inner = (f'<fieldset><legend>Your points</legend>{"".join(choices)}</fieldset>'
                 '<fieldset><legend>Confirm</legend><label><input type="checkbox" name="confirm" value="yes" required>'
                 " Yes, forget this card for good: its history, coupons, documents and points.</label></fieldset>")
        body = (f"<p>This deletes everything stored under your card (you can download it first) and the card "
                f"stops working. The store's figures keep only what never named your card.</p>"
                f"{_form('/kiosk/erase', inner, button='Forget this card', cls='danger')}"
                f'<p><a class="button quiet" href="/kiosk/card">Back, keep my card</a></p>')  # fmt: skip
        return page("Forget this card?", body, refresh=self.sessions.idle_s)

    async def erase(self, request: Request) -> Response:
        held = await self._with_card(request)
        if isinstance(held, Response):
            return held
        sid, secret = held
        try:
            form = await self._form(request)
            points = form.get("points", "forfeit")
            body: dict[str, Any] = {"card": secret.code, "confirm": form.get("confirm") == "yes"}
            if points.startswith("reward:"):
                body["reward"] = points[len("reward:"):]

            def run(svc):
                from .selfservice import Holder

                return Holder(svc).erase(body)

            done = await self._run(run)
        except AnonCardError as exc:
            return page("Forget this card?", _error(exc) + '<p><a class="button" href="/kiosk/erase">Back</a></p>',
                        status=400, refresh=self.sessions.idle_s)  # fmt: skip
        self.sessions.drop_card(sid)
        said = (f"Hand over: <strong>{_e(done.reward)}</strong> ({done.points_redeemed} points). "
                if done.reward else "")  # fmt: skip
        text = (f'<p class="note" role="status" id="erased">Your card is forgotten. {said}'
                f"{done.points_forfeited} points were forfeited. Nothing stored names this card any more.</p>"
                f'<p><a class="button" href="/kiosk">Finish</a></p>')
        response = page("Card forgotten", text)
        response.headers["Clear-Site-Data"] = '"cache"'
        return response

    def _replace_form(self, error: str = "", status: int = 200) -> Response:
        inner = ('<label for="recovery">Recovery code from your card\'s stub (R1-...)</label>'
                 '<input type="text" id="recovery" name="recovery" required autocomplete="off" spellcheck="false"'
                 ' autocapitalize="characters">'
                 '<fieldset><legend>Your history</legend><label><input type="checkbox" name="history" value="yes">'
                 " Move my purchase history to the new card too (else it is erased)</label></fieldset>")
        body = (f"{error}<p>Your points move to a new card. The lost card and its stub stop working; "
                f"the new card comes with a new stub.</p>{_form('/kiosk/replace', inner, button='Replace my card')}"
                f'<p><a class="button quiet" href="/kiosk">Back</a></p>')  # fmt: skip
        return page("Replace a lost card", body, status=status)

    async def replace_page(self, request: Request) -> Response:
        if await self._terminal(request) is None:
            return self._login_page(status=401)
        return self._replace_form()

    async def replace(self, request: Request) -> Response:
        signed = await self._terminal(request)
        if signed is None:
            return self._login_page(status=401)
        sid, name = signed
        try:
            form = await self._form(request)
            self.server.recovery_limit.check(name)
            body = {"recovery": form.get("recovery", ""), "history": form.get("history") == "yes"}

            def run(svc):
                from .selfservice import Holder

                return Holder(svc).replace(body)

            try:
                done = await self._run(run)
            except UnknownCard:
                self.server.recovery_limit.count(name)
                raise
        except AnonCardError as exc:
            return self._replace_form(_error(exc), status=400)
        self.sessions.drop_card(sid)
        moved = "Your history moved with it." if done.history_moved else "Your old history was erased."
        text = (f'<p class="note" role="status">Your new card holds <strong id="moved">{done.balance}</strong> '
                f"points. {moved} Write down or print both codes now: they are shown only once.</p>"
                f'<p>New card code</p><p class="code" id="new-card">{_e(done.issued.card.code)}</p>'
                f'<p>New recovery code (keep it apart from the card)</p>'
                f'<p class="code" id="new-recovery">{_e(done.issued.recovery.code)}</p>'
                f'<p class="noprint"><a class="button" href="/kiosk">Finish</a></p>')
        return page("Your new card", text, refresh=self.sessions.idle_s)

    async def done(self, request: Request) -> Response:
        sid = request.cookies.get(COOKIE)
        if sid:
            self.sessions.drop_card(sid)
        response = RedirectResponse("/kiosk", status_code=303, headers=SECURITY_HEADERS)
        response.headers["Clear-Site-Data"] = '"cache"'
        return response

    async def timeout(self, request: Request) -> Response:
        sid = request.cookies.get(COOKIE)
        if sid:
            self.sessions.drop_card(sid)
        response = page("Session ended", '<p class="note" role="status">Your session ended and nothing of it was '
                         'kept. <a href="/kiosk">Start again</a>.</p>')  # fmt: skip
        response.headers["Clear-Site-Data"] = '"cache"'
        return response
