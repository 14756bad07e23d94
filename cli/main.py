"""anoncard's commands. Each one parses, calls one service method, prints.

Errors from the library become ``Error: ...`` on stderr and the error's exit code;
with ``--json`` an ``{"error": {"code": ..., "message": ...}}`` object is printed on
stdout as well.
"""

from __future__ import annotations

import functools
import json
import sys
from datetime import datetime
from pathlib import Path

import click

from anoncard import protocol
from anoncard.errors import AnonCardError, PolicyViolation
from anoncard.service import Service, init_home, migrate_home

MAX_INPUT_BYTES = protocol.MAX_REQUEST_BYTES


def _emit_error(exc: AnonCardError, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(protocol.envelope(exc)))
    click.echo(f"Error: {exc.message}", err=True)
    sys.exit(exc.exit_code)


def _declared_names(group: click.Group) -> set[str]:
    """Every command and option name anoncard declares, and ``--email`` and the like for the
    field names the gate names: the only words a usage error repeats."""
    from anoncard.policy import NAMEABLE_FIELDS

    names = {f"--{name.replace('_', '-')}" for name in NAMEABLE_FIELDS}
    stack: list[click.Command] = [group]
    while stack:
        command = stack.pop()
        if command.name:
            names.add(command.name)
        for param in command.params:
            names.update(param.opts)
            names.update(param.secondary_opts)
        if isinstance(command, click.Group):
            stack.extend(command.commands.values())
    return names


def _rule(param: click.Parameter | None, exc: click.BadParameter) -> str:
    """What a parameter's value must be, from its type alone (the value given is never repeated)."""
    kind = getattr(param, "type", None)
    if isinstance(kind, click.Choice):
        return "must be one of " + ", ".join(map(str, kind.choices))
    if isinstance(kind, click.IntRange):
        return f"must be a whole number from {kind.min} to {kind.max}"
    if isinstance(kind, click.types.IntParamType):
        return "must be a whole number"
    if isinstance(kind, click.types.FloatParamType):
        return "must be a number"
    if isinstance(kind, click.types.BoolParamType):
        return "must be true or false"
    if isinstance(kind, click.Path):
        text = exc.message
        if "does not exist" in text:
            return "no such file or directory"
        if "is a directory" in text:
            return "is a directory, not a file"
        if "is a file" in text:
            return "is a file, not a directory"
        return "not a usable path"
    return "not a valid value"


def _usage_message(exc: click.UsageError, names: set[str]) -> str:
    """A usage error naming the option or argument and the rule - never what was typed (an
    extra argument or a bad value may be a card code)."""
    if isinstance(exc, click.MissingParameter):
        message = exc.format_message()  # names the parameter only
    elif isinstance(exc, click.BadParameter):
        hint = exc.param.get_error_hint(exc.ctx) if exc.param is not None and exc.ctx is not None else "a value"
        message = f"Invalid value for {hint}: {_rule(exc.param, exc)}"
    elif isinstance(exc, click.NoSuchOption):
        named = f" '{exc.option_name}'" if exc.option_name in names else ""
        message = f"No such option{named} for this command"
    elif isinstance(exc, click.BadOptionUsage):
        named = f"'{exc.option_name}'" if exc.option_name in names else "an option"
        if "requires" in exc.message:
            message = f"Option {named} needs a value"
        elif "does not take" in exc.message:
            message = f"Option {named} takes no value"
        else:
            message = f"Option {named} is not used that way"
    elif exc.message.startswith("Got unexpected extra argument"):
        message = "Got unexpected extra arguments: this command takes no more"
    elif exc.message.startswith("No such command"):
        message = "No such command"
    elif exc.message == "Missing command.":
        message = exc.message
    else:
        message = "The command line is not valid"
    if exc.ctx is not None:
        message += f" (see '{exc.ctx.command_path} --help')"
    return message


def _usage_exit(exc: click.UsageError, argv: list[str], names: set[str]) -> None:
    message = _usage_message(exc, names)
    if "--json" in argv:
        click.echo(json.dumps({"error": {"code": "usage_error", "message": message}}))
    click.echo(f"Error: {message}", err=True)
    sys.exit(exc.exit_code)


class _Main(click.Group):
    """The top group: usage errors (an unknown option, ``--count abc``) follow the same
    contract as the library's errors - ``Error: ...`` first on stderr, the JSON error
    object on stdout with ``--json`` - and exit 2. Their messages name the option and the
    rule, never what was typed."""

    def make_context(self, info_name, args, parent=None, **extra):
        argv = list(args)
        try:
            ctx = super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            _usage_exit(exc, argv, _declared_names(self))
        ctx.meta["anoncard.argv"] = argv
        return ctx

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            _usage_exit(exc, ctx.meta.get("anoncard.argv", []), _declared_names(self))


def command(group: click.Group, name: str, **kwargs):
    """Register a command with ``--json`` and the library's errors turned into exit codes."""

    def decorate(fn):
        @group.command(name, **kwargs)
        @click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
        @click.pass_obj
        @functools.wraps(fn)
        def wrapper(obj, as_json, **params):
            try:
                return fn(obj, as_json, **params)
            except AnonCardError as exc:
                _emit_error(exc, as_json)

        return wrapper

    return decorate


def _open(obj: dict) -> Service:
    """Open the home and run its startup step (the audit opens without it: it never writes)."""
    svc = Service.open(obj["home"])
    try:
        return svc.prepare()
    except BaseException:
        svc.close()
        raise


def _print(as_json: bool, data, human: str) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False) if as_json else human)


def _read_request(source: str) -> object:
    try:
        stream = sys.stdin.buffer if source == "-" else open(source, "rb")  # noqa: SIM115
        with stream:
            data = protocol.read_bounded(stream)
    except OSError as exc:
        raise PolicyViolation(f"field 'input': cannot read the file ({exc.strerror})", field="input") from None
    return protocol.decode(data)


def _lines(values: tuple[str, ...]) -> list[dict]:
    out = []
    for i, v in enumerate(values, 1):
        category, sep, amount = v.rpartition("=")
        if not sep:
            raise PolicyViolation(f"field 'line' (#{i}): must be CATEGORY=AMOUNT, e.g. dairy=3.49", field="line")
        out.append({"category": category, "amount": amount})
    return out


def _request(input_: str | None, flags: dict) -> object:
    """The request from ``--input`` (JSON) or from flags, never both."""
    given = {k: v for k, v in flags.items() if v not in (None, (), [])}
    if input_ is not None:
        if given:
            raise PolicyViolation(f"request: use --input or flags, not both (got --{next(iter(given))})")
        return _read_request(input_)
    return given


def _at(value: str | None) -> datetime | None:
    return None if value is None else protocol.parse_at(value)


def _run(obj: dict, name: str, request: object, at: str | None = None) -> object:
    """One terminal operation through the protocol module (the same path as serve and HTTP)."""
    if at is not None and isinstance(request, dict):
        request = {**request, "at": at}
    with _open(obj) as svc:
        return protocol.run(protocol.BY_NAME[name], protocol.Context(svc, obj["home"]), request)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="ANONCARD_HOME",
    default=".anoncard",
    show_default=True,
    help="Directory holding the database, key ring and programme (env: ANONCARD_HOME).",
)
@click.version_option(package_name="anoncard")
@click.pass_context
def main(ctx: click.Context, home: Path) -> None:
    """anoncard - an anonymous loyalty card: it stores what you buy, not who you are.

    \b
    Example:
      anoncard --home ./store init
      anoncard --home ./store card issue --count 3
      anoncard --home ./store checkout --card C1-... --txn till3-0001 --line dairy=3.49
    """
    ctx.obj = {"home": home}


@command(main, "init")
def init(obj, as_json):
    """Create the home: key ring (mode 0600), programme and database. Never overwrites.

    \b
    Example:
      anoncard --home ./store init
    """
    created = init_home(obj["home"])
    _print(
        as_json,
        {"home": str(obj["home"]), "created": created},
        f"home {obj['home']}: " + (f"created {', '.join(created)}" if created else "already initialised"),
    )


@main.group("card")
def card() -> None:
    """Anonymous cards: issue them (codes, recovery stubs, QR files for the print shop); and
    for their holders: export, erase, replace a lost card.

    \b
    Example:
      anoncard card issue --count 500 --qr-dir ./print-run
      anoncard card replace --recovery R1-...
    """


@command(card, "issue")
@click.option("--count", default=1, show_default=True, help="How many cards.")
@click.option("--qr-dir", type=click.Path(file_okay=False, path_type=Path), help="Write one QR file per card here.")
@click.option("--qr-format", type=click.Choice(["png", "svg"]), default="png", show_default=True)
@click.option("--preview", is_flag=True, help="Also draw each card's QR code in the terminal.")
def card_issue(obj, as_json, count, qr_dir, qr_format, preview):
    """Issue new cards and print their codes, one per line: the card code, then the recovery
    code for the card's detachable stub (it replaces a lost card, once).

    Only a keyed token of each card and a keyed digest of each recovery code are stored;
    the printed codes and QR files are the only copies of the secrets - hand them out,
    then delete the files.

    \b
    Example:
      anoncard card issue --count 500 --qr-dir ./print-run --qr-format svg
    """
    if qr_dir is not None:
        from anoncard import qr

        qr.prepare(qr_dir, "card-", qr_format, fresh=True)

    def emit(issued, files):  # runs before the cards are stored: if it fails, none is stored
        if as_json:
            rows = [c.to_dict() for c in issued]
            for row, path in zip(rows, files, strict=False):
                row["qr"] = str(path)
            click.echo(json.dumps(rows, indent=2))
        else:
            for c in issued:
                click.echo(f"{c.card.code}  {c.recovery.code}")
                if preview:
                    from anoncard import qr

                    click.echo(qr.terminal(c.card.code))
        sys.stdout.flush()

    with _open(obj) as svc:
        svc.issue_cards_with_stubs({"count": count}, qr_dir=qr_dir, qr_format=qr_format, emit=emit)


@command(card, "export")
@click.option("--card", "card_code", help="The card code.")
@click.option("--input", "input_", metavar="FILE|-", help="Read the JSON request from a file or stdin instead.")
def card_export(obj, as_json, card_code, input_):
    """Everything stored under a card, for its holder: an anoncard-export/1 JSON document.

    The output is JSON with or without --json (see docs/export-format.md).

    \b
    Example:
      anoncard card export --card C1-... > my-card.json
    """
    doc = _run(obj, "export", _request(input_, {"card": card_code}))
    click.echo(json.dumps(doc, indent=2))


@command(card, "erase")
@click.option("--card", "card_code", help="The card code.")
@click.option("--reward", help="Redeem the remaining points for this reward first (else they are forfeited).")
@click.option("--yes", is_flag=True, help="Confirm: the card, its history and its points go for good.")
@click.option("--input", "input_", metavar="FILE|-", help="Read the JSON request from a file or stdin instead.")
def card_erase(obj, as_json, card_code, reward, yes, input_):
    """Forget a card: delete it and everything stored under it, at its holder's request.

    The remaining points are forfeited, or first redeemed with --reward. The event log
    records that an erasure happened, never which card.

    \b
    Example:
      anoncard card erase --card C1-... --yes
      anoncard card erase --card C1-... --reward coffee --yes
    """
    flags = {"card": card_code, "reward": reward, "confirm": True if yes else None}
    request = _request(input_, flags)
    if input_ is None and not yes:
        request = {**request, "confirm": False}
    e = _run(obj, "erase", request)
    text = "card erased"
    if e.reward:
        text += f"; hand over: {e.reward} ({e.points_redeemed} points)"
    text += f"; points forfeited: {e.points_forfeited}"
    _print(as_json, e.to_dict(), text)


@command(card, "replace")
@click.option("--recovery", help="The recovery code from the lost card's stub (R1-...).")
@click.option("--history", is_flag=True, help="Move the purchase history to the new card too (else it is erased).")
@click.option("--input", "input_", metavar="FILE|-", help="Read the JSON request from a file or stdin instead.")
def card_replace(obj, as_json, recovery, history, input_):
    """Replace a lost card: its points move to a new card, printed with a new recovery code.

    The old card and its recovery code stop working. The new codes are printed before
    the change is stored: if printing fails, nothing changed.

    \b
    Example:
      anoncard card replace --recovery R1-... --history
    """
    from anoncard.selfservice import Holder

    request = _request(input_, {"recovery": recovery, "history": True if history else None})

    def emit(issued):
        if as_json:
            click.echo(json.dumps(issued.to_dict(), indent=2))
        else:
            click.echo(f"new card: {issued.card.code}\nrecovery: {issued.recovery.code}")
        sys.stdout.flush()

    with _open(obj) as svc:
        r = Holder(svc).replace(request, emit=emit)
    if not as_json:
        click.echo(f"balance moved: {r.balance} points" + ("; history moved" if r.history_moved else ""))


def _balance_text(b: dict) -> str:
    """A balance answer (``Balance.to_dict()`` or the server's JSON) as the till shows it."""
    lines = [f"points {b['points']}, visits {b['visits']}"]
    lines += [
        f"  {d['day']}  {d['kind']:<8} {d['points']:+6d}  {d['spend']:>9}  {d.get('item', '')}".rstrip()
        for d in b.get("recent", [])
    ]
    return "\n".join(lines)


def _receipt_text(r) -> str:
    if r.kind == "checkout":
        text = f"{r.txn}: spend {r.spend} EUR, points {r.points:+d}, balance {r.balance}"
        for c in r.coupons:
            gain = f"-{c['discount']} EUR" if c["bonus_points"] == 0 else f"+{c['bonus_points']} points"
            text += f"\ncoupon {c['category']}: {gain}"
        if r.discount:
            text += f"\ndiscount to deduct: {r.discount} EUR"
        if r.gift:
            text += f"\nhand over: {r.gift}"
    elif r.kind == "refund":
        text = f"{r.txn}: refunded {r.spend.lstrip('-')} EUR, points {r.points:+d}, balance {r.balance}"
        if r.gift_to_return:
            text += f"\nbasket is now below the threshold of: {r.gift_to_return}"
    else:
        text = f"{r.txn}: redeemed {r.reward}, points {r.points:+d}, balance {r.balance}"
    if r.replayed:
        text += "\n(already recorded: nothing credited again)"
    if r.relinked:
        text += "\n(card re-linked to the current key)"
    return text


@command(main, "checkout")
@click.option("--card", "card_code", help="The card code (as typed or scanned).")
@click.option("--txn", help="Till document number; a retry with the same number counts once.")
@click.option("--line", "lines", multiple=True, metavar="CATEGORY=AMOUNT", help="A basket line, e.g. dairy=3.49.")
@click.option("--coupon", "coupon_codes", multiple=True, metavar="CODE", help="A coupon to redeem (repeatable).")
@click.option("--input", "input_", metavar="FILE|-", help="Read the JSON request from a file or stdin instead.")
@click.option(
    "--at",
    help="Day or time of the purchase (ISO) for an offline replay, within the policy's [time] window; "
    "default: the server's clock.",
)
def checkout(obj, as_json, card_code, txn, lines, coupon_codes, input_, at):
    """Credit a basket to a card: points, and the gift to hand over.

    \b
    Example:
      anoncard checkout --card C1-... --txn store7-till3-000123 \\
          --line dairy=3.49 --line coffee=7.99
      echo '{"card": "C1-...", "txn": "t1", "lines": [{"category": "dairy", "amount": "3.49"}]}' \\
          | anoncard checkout --input -
    """
    flags = {"card": card_code, "txn": txn, "lines": _lines(lines) if lines else None, "coupons": list(coupon_codes)}
    r = _run(obj, "checkout", _request(input_, flags), at)
    _print(as_json, r.to_dict(), _receipt_text(r))


@command(main, "refund")
@click.option("--txn", help="Document number of the original checkout.")
@click.option("--refund-id", help="Document number of this refund (required for a partial refund).")
@click.option("--line", "lines", multiple=True, metavar="CATEGORY=AMOUNT", help="A returned line; none = all.")
@click.option("--input", "input_", metavar="FILE|-", help="Read the JSON request from a file or stdin instead.")
def refund(obj, as_json, txn, refund_id, lines, input_):
    """Refund a whole checkout, or some lines of it, reversing their points.

    \b
    Example:
      anoncard refund --txn store7-till3-000123
      anoncard refund --txn store7-till3-000123 --refund-id R-77 --line coffee=7.99
    """
    request = _request(input_, {"txn": txn, "refund_id": refund_id, "lines": _lines(lines) if lines else None})
    r = _run(obj, "refund", request)
    _print(as_json, r.to_dict(), _receipt_text(r))


@command(main, "balance")
@click.option("--card", "card_code", help="The card code.")
@click.option("--input", "input_", metavar="FILE|-", help="Read the JSON request from a file or stdin instead.")
def balance(obj, as_json, card_code, input_):
    """Points and recent activity of a card.

    \b
    Example:
      anoncard balance --card C1-...
    """
    b = _run(obj, "balance", _request(input_, {"card": card_code}))
    data = b.to_dict()
    _print(as_json, data, _balance_text(data))


@command(main, "redeem")
@click.option("--card", "card_code", help="The card code.")
@click.option("--reward", help="Reward name from the programme's catalogue.")
@click.option("--txn", help="Till document number of the redemption; a retry counts once.")
@click.option("--input", "input_", metavar="FILE|-", help="Read the JSON request from a file or stdin instead.")
def redeem(obj, as_json, card_code, reward, txn, input_):
    """Spend points on a reward.

    \b
    Example:
      anoncard redeem --card C1-... --reward coffee --txn store7-till3-000124
    """
    r = _run(obj, "redeem", _request(input_, {"card": card_code, "reward": reward, "txn": txn}))
    _print(as_json, r.to_dict(), _receipt_text(r))


@command(main, "enter")
@click.option("--card", "card_code", help="The card code, as scanned at the entrance column.")
@click.option("--input", "input_", metavar="FILE|-", help="Read the JSON request from a file or stdin instead.")
@click.option("--qr-dir", type=click.Path(file_okay=False, path_type=Path), help="Write each coupon's QR code here.")
@click.option("--qr-format", type=click.Choice(["png", "svg"]), default="png", show_default=True)
@click.option("--preview", is_flag=True, help="Also draw each coupon's QR code in the terminal.")
def enter(obj, as_json, card_code, input_, qr_dir, qr_format, preview):
    """Entrance column: print a few coupons chosen from this card's purchase history.

    Coupons the card still holds are printed again; new ones respect the programme's
    caps per visit and week and rest categories the card keeps ignoring. Coupons are
    dated and checked by the server's clock only.

    \b
    Example:
      anoncard enter --card C1-... --qr-dir ./coupons
    """
    request = _request(input_, {"card": card_code})
    if qr_dir is not None:
        from anoncard import qr

        qr.prepare(qr_dir, "coupon-", qr_format, fresh=False)  # the column's printer spool: reused
    result = _run(obj, "enter", request, None)
    files = []
    if qr_dir is not None:
        files = [str(qr.write(c.code, qr_dir, f"coupon-{i:02d}", qr_format)) for i, c in enumerate(result.coupons, 1)]
    if as_json:
        data = result.to_dict()
        for row, path in zip(data["coupons"], files, strict=False):
            row["qr"] = path
        _print(True, data, "")
        return
    if not result.coupons:
        click.echo("no coupons today")
    for c in result.coupons:
        click.echo(f"{'new ' if c.new else 'held'}  {c.text} (valid until {c.expires})")
        click.echo(f"      {c.code}")
        if preview:
            from anoncard import qr

            click.echo(qr.terminal(c.code))


@main.command("serve")
@click.pass_obj
def serve(obj):
    """JSON lines on stdin -> one JSON response line each on stdout, for long-lived terminals.

    Each request names its operation in "op" (checkout, refund, balance, redeem, enter);
    the other fields are the request, checked by the same gate as the CLI.

    \b
    Example:
      echo '{"op": "balance", "card": "C1-..."}' | anoncard serve
    """
    from anoncard import serve as serve_mod

    try:
        svc = _open(obj)
    except AnonCardError as exc:
        _emit_error(exc, False)
    with svc:
        serve_mod.run(protocol.Context(svc, obj["home"]), sys.stdin.buffer, sys.stdout)


@main.command("server")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8443, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True), help="Server certificate (PEM): HTTPS.")
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True), help="Private key of --tls-cert (PEM).")
@click.option("--client-ca", type=click.Path(dir_okay=False, exists=True),
              help="Admit only clients with a certificate from this CA (mutual TLS).")  # fmt: skip
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Server processes.")
@click.option("--threads", default=4, show_default=True, type=click.IntRange(1, 64),
              help="Database threads per process (each with its own connection).")  # fmt: skip
@click.option("--unknown-card-limit", default=30, show_default=True, type=click.IntRange(1),
              help="Unknown-card answers one terminal may get per window (code guessing), then 429.")  # fmt: skip
@click.option("--unknown-card-window", default=60.0, show_default=True, type=click.FloatRange(1),
              help="The window of --unknown-card-limit, in seconds.")  # fmt: skip
@click.pass_obj
def server(obj, host, port, tls_cert, tls_key, client_ca, workers, threads, unknown_card_limit, unknown_card_window):
    """The store server: every terminal operation over HTTP(S), one bearer key per terminal.

    Add terminals first ('anoncard terminals add'); see /openapi.json for the operations.

    \b
    Example:
      anoncard server --host 0.0.0.0 --port 8443 --tls-cert server.pem --tls-key server.key
    """
    from anoncard import http

    try:
        http.serve(obj["home"], host=host, port=port, tls_cert=tls_cert, tls_key=tls_key, client_ca=client_ca,
                   workers=workers, threads=threads, unknown_card_limit=unknown_card_limit,
                   unknown_card_window_s=unknown_card_window)  # fmt: skip
    except AnonCardError as exc:
        _emit_error(exc, False)


@main.group("terminals")
def terminals_group() -> None:
    """Terminals of the store server: add (shows the key once), list, revoke.

    \b
    Example:
      anoncard terminals add --name store7-till3 --role till
      anoncard terminals list
      anoncard terminals revoke --name store7-till3
    """


@command(terminals_group, "add")
@click.option("--name", help="The terminal's name, e.g. store7-till3.")
@click.option("--role", help="till, entrance, kiosk, operator or auditor.")
def terminals_add(obj, as_json, name, role):
    """Add a terminal and print its bearer key - the only time it is shown.

    \b
    Example:
      anoncard terminals add --name store7-entrance --role entrance
    """
    r = _run(obj, "terminals_add", {k: v for k, v in {"name": name, "role": role}.items() if v is not None})
    _print(as_json, r, r["key"])
    if not as_json:
        click.echo(f"terminal {r['name']} ({r['role']}): keep this key; it is not shown again", err=True)


@command(terminals_group, "list")
def terminals_list(obj, as_json):
    """Terminals, their roles and days (never keys).

    \b
    Example:
      anoncard terminals list
    """
    rows = _run(obj, "terminals_list", {})["terminals"]
    _print(
        as_json,
        rows,
        "\n".join(
            f"{t['name']:<24} {t['role']:<9} added {t['created']}"
            + (f", revoked {t['revoked']}" if t["revoked"] else "")
            for t in rows
        )
        or "no terminals",
    )


@command(terminals_group, "revoke")
@click.option("--name", help="The terminal to revoke.")
def terminals_revoke(obj, as_json, name):
    """Revoke a terminal's key; the server refuses it from the next request on.

    \b
    Example:
      anoncard terminals revoke --name store7-till3
    """
    r = _run(obj, "terminals_revoke", {} if name is None else {"name": name})
    _print(as_json, r, f"terminal {r['name']} revoked on {r['revoked']}")


@main.group("coupons")
def coupons_group() -> None:
    """Coupon keys for terminals that verify coupons offline.

    \b
    Example:
      anoncard coupons public-key --json
    """


@command(coupons_group, "public-key")
def coupons_public_key(obj, as_json):
    """The public key terminals use to verify coupons offline (base64 of 32 bytes).

    \b
    Example:
      anoncard coupons public-key > coupon-key.pub
    """
    result = _run(obj, "coupon_public_key", {})
    _print(as_json, result, result["ed25519_public_key"])


@command(main, "backup")
@click.argument("dest", type=click.Path(dir_okay=False, path_type=Path))
def backup(obj, as_json, dest):
    """Copy the database to DEST, consistent while terminals keep writing.

    The key ring is not in the backup: export it with 'keys export' and store the two
    apart - together they link every presented card to its history.

    \b
    Example:
      anoncard backup /mnt/backup/anoncard-2026-11-22.db
    """
    with _open(obj) as svc:
        info = svc.backup(dest)
    _print(as_json, {"backup": str(dest), **info}, f"backup written: {dest} ({info['bytes']} bytes)")


@command(main, "migrate")
def migrate(obj, as_json):
    """Bring the home's database to this anoncard's schema (the numbered migrations of its dialect).

    Opening a home migrates it as well; run this once after an upgrade, before the store
    servers start, so that they find the schema ready. On PostgreSQL the migrations run in
    one transaction under a lock, so servers starting at once wait rather than race.

    \b
    Example:
      ANONCARD_DATABASE_URL=postgresql://anoncard@db.internal/chain anoncard migrate
    """
    info = migrate_home(obj["home"])
    _print(as_json, info, f"{info['database']}: schema version {info['schema_version']} ({info['backend']})")


@command(main, "restore")
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--yes", is_flag=True, help="Confirm: the current database content is replaced.")
def restore(obj, as_json, source, yes):
    """Replace the database with a backup; cards under keys retired since are purged again.

    \b
    Example:
      anoncard restore /mnt/backup/anoncard-2026-11-22.db --yes
    """
    if not yes:
        raise PolicyViolation("field 'yes': restoring replaces the database; confirm with --yes", field="yes")
    with _open(obj) as svc:
        info = svc.restore(source)
    _print(as_json, info, f"restored {source}: {info['cards']} cards, {info['cards_purged_again']} purged again")


@main.group("keys")
def keys() -> None:
    """Key ring management: list, rotate, retire, export.

    \b
    Example:
      anoncard keys rotate
      anoncard keys list
      anoncard keys retire --yes
    """


@command(keys, "list")
def keys_list(obj, as_json):
    """Key versions, their states and how many cards each links (never key material).

    \b
    Example:
      anoncard keys list
    """
    with _open(obj) as svc:
        rows = svc.list_keys()
    _print(
        as_json,
        rows,
        "\n".join(f"v{r['version']}  {r['state']:<11}  created {r['created']}  cards {r['cards']}" for r in rows),
    )


@command(keys, "export")
@click.argument("dest", type=click.Path(dir_okay=False, path_type=Path))
def keys_export(obj, as_json, dest):
    """Copy the key ring to DEST (mode 0600), for a backup kept apart from the database's.

    \b
    Example:
      anoncard keys export /media/offline-usb/keyring-2026-11-22.json
    """
    with _open(obj) as svc:
        svc.export_keys(dest)
    _print(as_json, {"exported": str(dest)}, f"key ring exported to {dest} (mode 0600); store it apart from backups")


@command(keys, "rotate")
def keys_rotate(obj, as_json):
    """Add a new primary key; the old one stays verify-only so cards are re-linked when seen.

    \b
    Example:
      anoncard keys rotate
    """
    with _open(obj) as svc:
        version = svc.rotate_keys()
    _print(as_json, {"primary": version}, f"new primary key: v{version}")


@command(keys, "retire")
@click.option("--yes", is_flag=True, help="Confirm: histories of cards not seen since the rotation are purged.")
def keys_retire(obj, as_json, yes):
    """Destroy the oldest verify-only key and purge the cards still linked only under it.

    \b
    Example:
      anoncard keys retire --yes
    """
    if not yes:
        raise PolicyViolation("field 'yes': retiring a key purges data for good; confirm with --yes", field="yes")
    with _open(obj) as svc:
        r = svc.retire_key()
    _print(as_json, r.to_dict(), f"retired key v{r.version}; purged {r.cards_purged} cards and their histories")


@command(main, "demo")
@click.option("--seed", default=2014, show_default=True)
@click.option("--cards", default=200, show_default=True)
@click.option("--checkouts", default=1500, show_default=True)
@click.option(
    "--into",
    type=click.Path(file_okay=False, path_type=Path),
    help="Play in this new home and keep it (e.g. to audit it); default: a temporary home.",
)
def demo(obj, as_json, seed, cards, checkouts, into):
    """Play a store week (the last whole week) in a temporary home and summarise it.

    \b
    Example:
      anoncard demo
      anoncard demo --into ./demo-home && anoncard --home ./demo-home audit
    """
    import tempfile

    from anoncard import demo as demo_mod

    if into is not None and into.exists() and any(into.iterdir()):
        raise PolicyViolation("field 'into': the directory is not empty; the demo needs a new home", field="into")
    with tempfile.TemporaryDirectory(prefix="anoncard-demo-") as tmp:
        where = into or Path(tmp)
        init_home(where)
        demo_mod.prepare(where)
        with Service.open(where, synchronous="NORMAL") as svc:
            if as_json or not sys.stderr.isatty():
                summary = demo_mod.run(svc, seed=seed, cards=cards, checkouts=checkouts)
            else:
                with click.progressbar(length=checkouts, label="store week", file=sys.stderr) as bar:
                    summary = demo_mod.run(svc, seed=seed, cards=cards, checkouts=checkouts, progress=bar.update)
            summary["insights"] = _demo_insights(svc, into)
            for key in ("coupon arms", "coupon uplift"):  # a line of their own
                if key in summary["insights"]:
                    summary[key] = summary["insights"].pop(key)
    if as_json:
        _print(True, summary, "")
        return
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items()) or "none"
        click.echo(f"{key:<{width}}  {value}")


def _demo_insights(svc: Service, into: Path | None) -> dict:
    """The demo ends with the insights of the 4 weeks to last Sunday (the store week's days in it)."""
    try:
        release = svc.insights({"period": "4weeks"})
    except ImportError:
        return {"skipped": "install anoncard[insights] (OpenDP, matplotlib) for the insights report"}
    active = next(f for f in release.to_dict()["figures"] if f["name"] == "active cards")
    out = {
        "span": f"{release.first} to {release.last}",
        "active cards": f"{active['value']:.0f} (95 % interval {active['low']:.0f} to {active['high']:.0f})",
        "note": "a small store gets wide intervals: the noise that hides one card does not shrink with the store",
    }
    uplift = svc.insights({"report": "uplift"})
    counts = {f.category: f.value for f in uplift.figures if f.name == "spend per card: cards"}
    out["coupon arms"] = f"{uplift.first} to {uplift.last}, cards per arm (released): " + ", ".join(
        f"{arm} {n:.0f}" for arm, n in counts.items()
    )
    spend = next((f for f in uplift.figures if f.name == "uplift of spend per card" and f.category.startswith("t")),
                 None)  # fmt: skip
    if spend is None:
        out["coupon uplift"] = "not released: " + uplift.not_released["uplift of spend per card, targeted - holdout"]
    else:
        verdict = (
            "the interval holds 0: at a store this size nobody can tell whether the coupons change spend"
            if spend.low <= 0 <= spend.high
            else "the interval leaves 0 out, but it is wide: a store this size measures its coupons only roughly"
        )
        out["coupon uplift"] = (
            f"spend per card, targeted - holdout: {spend.value / 100:+.2f} EUR (95 % interval {spend.low / 100:+.2f} "
            f"to {spend.high / 100:+.2f}); {verdict}"
        )
    if into is not None:
        from anoncard import files, report

        files.create(into / "insights.html", report.html(release).encode(), field="into")
        files.create(into / "insights.csv", release.to_csv().encode(), field="into")
        files.create(into / "uplift.html", report.html(uplift).encode(), field="into")
        out["report"] = f"{into / 'insights.html'}, {into / 'uplift.html'}"
    return out


@main.group("policy")
def policy_group() -> None:
    """The data-minimisation policy: show it, apply a new one.

    \b
    Example:
      anoncard policy show > policy.md
      anoncard policy apply new-policy.toml
    """


@command(policy_group, "show")
def policy_show(obj, as_json):
    """The policy in words an auditor reads (Markdown), with its fingerprint.

    \b
    Example:
      anoncard policy show > policy.md
      anoncard policy show --json | jq .fingerprint
    """
    from anoncard.policy import Policy

    policy = Policy.load(obj["home"] / "policy.toml")
    _print(as_json, policy.to_dict(), policy.to_markdown())


@command(policy_group, "apply")
@click.argument("new_policy", type=click.Path(dir_okay=False, exists=True, path_type=Path))
def policy_apply(obj, as_json, new_policy):
    """Adopt NEW_POLICY: validate it, record old and new fingerprints in the event log.

    \b
    Example:
      anoncard policy apply ./policy-2027.toml
    """
    from anoncard import files
    from anoncard.errors import PolicyFileError

    text = files.read_text(new_policy, error=PolicyFileError, what="policy")
    with Service.open(obj["home"], check_policy=False) as svc:
        change = svc.apply_policy(text, obj["home"] / "policy.toml")
    _print(as_json, change, f"policy applied: {str(change['old'])[:16]} -> {change['new'][:16]} (recorded)")


@command(main, "purge")
def purge(obj, as_json):
    """Apply the policy's retention as of the server's clock: compact old documents, fold old history.

    Balances never change. The purge is recorded in the event log.

    \b
    Example:
      anoncard purge
    """
    with _open(obj) as svc:
        counts = svc.purge()
    _print(as_json, counts, "\n".join(f"{k}: {v}" for k, v in counts.items()))


@command(main, "fit")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True, help="Seed of the fit.")
@click.option(
    "--discovery-target",
    type=click.FloatRange(0, 1),
    default=None,
    help="Share of visits the discovery slot should reach (default 0: habits first; 0.07: the programme's target).",
)
def fit(obj, as_json, seed, discovery_target):
    """Fit the suggestion model on the store's own history (the nightly job) and write it in the home.

    The entrance uses it from its next visit on; without it, the built-in engine. The model
    holds trees over store-wide features and counts of what it was fitted on: no card.

    \b
    Example:
      anoncard fit --seed 0
    """
    with _open(obj) as svc:
        report = svc.fit_suggestions(seed=seed, discovery_target=discovery_target)
    v = report["validation"]["habits_first"]
    _print(
        as_json,
        report,
        f"model {report['fingerprint'][:16]}: {report['habit_trees']} + {report['discovery_trees']} trees, "
        f"{report['fitted']['origins']} visits of {report['fitted']['cards']} cards in {report['seconds']} s; "
        f"held-out days hit@3 {v['hit@3']}, precision@3 {v['precision@3']}",
    )


def _figure_text(f: dict) -> str:
    high = "unbounded" if f["high"] is None else f"{f['high']:.4g}"
    what = f["name"] + (f" [{f['category']}]" if f["category"] else "")
    scale = "" if f["scale"] is None else f"  (noise scale {f['scale']:.4g})"
    return f"{what}: {f['value']:.4g} {f['unit']}, 95 % interval {f['low']:.4g} to {high}{scale}"


def _bounds_text(r: dict) -> str:
    b = r["bounds"]
    if r["report"] == "uplift":
        return (
            f"bounds per card: S = {b['spend']} cents spend in the period (chosen privately), "
            f"purchase rate 0 to {b['rate']} basis points"
        )
    if r["report"] == "cohorts":
        return f"bounds per card: one cohort of {b['months']}, active in at most {b['months'] - 1} later months"
    return (
        f"bounds per card (chosen privately): K = {b['categories']} categories, C = {b['category_spend']} cents "
        f"per category, V = {b['visits']} visits, S = {b['spend']} cents, R = {b['coupons']} coupons"
    )


def _insights_text(r: dict) -> str:
    out = [
        f"insights {r['period']} {r['first_day']} to {r['last_day']} ({r['grouping']}), epsilon {r['epsilon']:.4g}",
        _bounds_text(r),
        *(_figure_text(f) for f in r["figures"]),
        *(f"note: {n}" for n in r.get("notes", [])),
        "not released:",
        *(f"  {what}: {why}" for what, why in r["not_released"].items()),
    ]
    return "\n".join(out)


@command(main, "insights")
@click.option(
    "--report",
    type=click.Choice(["figures", "uplift", "cohorts"]),
    help="What to release: the span's figures (default), the coupon arms' uplift over the last campaign period, "
    "or the retention of monthly cohorts.",
)
@click.option(
    "--period", type=click.Choice(["week", "4weeks", "quarter"]), help="Span of the figures [default: 4weeks]."
)
@click.option(
    "--ending",
    help="Last day of the span (YYYY-MM-DD): a Sunday for figures, a campaign period's last day for uplift, a "
    "month's for cohorts; default the last one before today.",
)
@click.option("--grouping", help="Whose figures: chain (the only grouping; tills send no region field).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write a CSV file.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write an HTML report.")
def insights_cmd(obj, as_json, report, period, ending, grouping, csv_path, html_path):
    """Release differentially private figures of a span; spends privacy budget (recorded, audited).

    Every figure comes with its noise scale and a 95 % interval; what is never released
    (per card, category pairs, finer groupings) is listed with the reason.

    \b
    Example:
      anoncard insights --period 4weeks --csv figures.csv --html report.html
      anoncard insights --period week --ending 2026-11-29 --json
      anoncard insights --report uplift --html uplift.html
      anoncard insights --report cohorts --csv cohorts.csv
    """
    from anoncard import files

    given = {"report": report, "period": period, "ending": ending, "grouping": grouping}
    request = {k: v for k, v in given.items() if v is not None}
    release = _run(obj, "insights", request)
    if csv_path is not None:
        files.create(csv_path, release.to_csv().encode(), field="csv")
    if html_path is not None:
        from anoncard import report

        files.create(html_path, report.html(release).encode(), field="html")
    data = release.to_dict()
    _print(as_json, data, _insights_text(data))


@command(main, "audit")
@click.option(
    "--report", type=click.Path(dir_okay=False, path_type=Path), help="Write the report here (.md, .html or .json)."
)
@click.option("--at", help="Day to audit retention as of (ISO date); default today.")
def audit_cmd(obj, as_json, report, at):
    """Verify what is stored against the policy; exit 0 only when every check passes.

    \b
    Example:
      anoncard audit --report audit.md
      anoncard audit --json
    """
    from anoncard import audit
    from anoncard.errors import AuditFailed

    when = _at(at)
    day = when.date() if isinstance(when, datetime) else when
    if sys.stderr.isatty() and not as_json:
        with click.progressbar(length=9, label="auditing", file=sys.stderr) as bar:
            result = audit.run(obj["home"], today=day, progress=lambda _name: bar.update(1))
    else:
        result = audit.run(obj["home"], today=day)
    if report is not None:
        result.write(report)
    if as_json:
        click.echo(result.to_json(), nl=False)
    else:
        for c in result.checks:
            click.echo(f"{'pass' if c.passed else 'FAIL'}  {c.key} {c.title}: {c.evidence}")
            for d in c.details:
                click.echo(f"        {d}")
        click.echo(f"audit {'passed' if result.passed else 'FAILED'}")
    if not result.passed:
        failed = ", ".join(f"{c.key} {c.title}" for c in result.checks if not c.passed)
        exc = AuditFailed(f"audit failed: {failed}")
        click.echo(f"Error: {exc.message}", err=True)
        sys.exit(exc.exit_code)


from cli.till import till as _till  # noqa: E402  (the till client's commands, in a module of their own)

main.add_command(_till)
