"""``anoncard till``: the terminal operations against a store server, with the till's offline outbox.

Each command parses, calls one :class:`anoncard.client.TillClient` method, prints. The
terminal key comes from ``--key-file`` or ``ANONCARD_TILL_KEY`` (``--key`` works too,
but shows the key to anyone running ``ps``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from anoncard.errors import AnonCardError, PolicyViolation
from anoncard.service import Receipt
from cli.main import _balance_text, _lines, _print, _receipt_text, _request, command

KEY_ENV = "ANONCARD_TILL_KEY"


def _key(key: str | None, key_file: Path | None) -> str:
    if key is not None:
        return key
    if key_file is not None:
        try:
            text = key_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            raise PolicyViolation("option 'key-file': cannot be read as a text file", field="key-file") from None
        lines = text.strip().splitlines()
        return lines[0].strip() if lines else ""
    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV]
    raise PolicyViolation(f"option 'key': give the terminal key with --key-file FILE or {KEY_ENV}", field="key")


def _client(obj: dict):
    from anoncard.client import TillClient

    if not obj["server"]:
        raise PolicyViolation("option 'server': required (--server URL or ANONCARD_SERVER)", field="server")
    identity = obj["client_cert"]
    if identity is not None and None in identity:
        raise PolicyViolation("option 'client-cert': give --client-cert and --client-key together", field="client-cert")
    return TillClient(
        obj["server"],
        _key(obj["key"], obj["key_file"]),
        obj["outbox"],
        timeout=obj["timeout"],
        cafile=obj["ca_file"],
        client_cert=identity,
    )


def _outbox(obj: dict):
    from anoncard.outbox import Outbox

    return Outbox(obj["outbox"])


def _receipt(data: dict) -> Receipt:
    fields = {k: v for k, v in data.items() if k in Receipt.__slots__}
    return Receipt(**{**fields, "coupons": tuple(fields.get("coupons", ()))})


def _print_sent(as_json: bool, sent) -> None:
    if sent.queued:
        text = f"{sent.document}: queued offline ({sent.reason}); sent when the server is back"
        _print(as_json, sent.to_dict(), text)
    else:
        _print(as_json, sent.to_dict(), _receipt_text(_receipt(sent.result)))


@click.group("till")
@click.option("--server", envvar="ANONCARD_SERVER", help="The store server's URL (env: ANONCARD_SERVER).")
@click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path), help="File holding the terminal key.")
@click.option("--key", help=f"The terminal key itself (visible in ps; prefer --key-file or {KEY_ENV}).")
@click.option(
    "--outbox",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="ANONCARD_TILL_OUTBOX",
    default="till-outbox.db",
    show_default=True,
    help="The till's outbox file, created owner-only (env: ANONCARD_TILL_OUTBOX).",
)
@click.option("--ca-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="The store's CA (PEM) that the https server's certificate must chain to.")  # fmt: skip
@click.option("--client-cert", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="The till's certificate (PEM), where the server requires mutual TLS.")  # fmt: skip
@click.option("--client-key", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="The private key of --client-cert (PEM).")  # fmt: skip
@click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds to wait for the server.")
@click.pass_context
def till(ctx: click.Context, server, key_file, key, outbox, ca_file, client_cert, client_key, timeout) -> None:
    """A till talking to the store server; checkouts and refunds are queued while it is away.

    Coupon checkouts, reward redemptions, balances and entrance visits need the server:
    offline they fail with exit status 20 and are not queued. The outbox holds the card
    codes of queued sales until they are delivered: it is created mode 0600.

    \b
    Example:
      export ANONCARD_SERVER=https://store7:8443
      export ANONCARD_TILL_KEY=...   # or --key-file /etc/anoncard/till.key
      anoncard till checkout --card C1-... --txn t3-000123 --line dairy=3.49
      anoncard till flush
      anoncard till status
    """
    ctx.obj = {
        **(ctx.obj or {}),
        "server": server,
        "key_file": key_file,
        "key": key,
        "outbox": outbox,
        "ca_file": ca_file,
        "client_cert": (client_cert, client_key) if client_cert or client_key else None,
        "timeout": timeout,
    }


@command(till, "checkout")
@click.option("--card", "card_code", help="The card code (as typed or scanned).")
@click.option("--txn", help="Till document number; a retry with the same number counts once.")
@click.option("--line", "lines", multiple=True, metavar="CATEGORY=AMOUNT", help="A basket line, e.g. dairy=3.49.")
@click.option("--coupon", "coupon_codes", multiple=True, metavar="CODE", help="A coupon to redeem (needs the server).")
@click.option("--input", "input_", metavar="FILE|-", help="Read the JSON request from a file or stdin instead.")
def till_checkout(obj, as_json, card_code, txn, lines, coupon_codes, input_):
    """Credit a basket; queued in the outbox when the server cannot be reached.

    \b
    Example:
      ANONCARD_SERVER=http://store7:8080 anoncard till checkout --card C1-... --txn t3-000123 --line dairy=3.49
    """
    flags = {"card": card_code, "txn": txn, "lines": _lines(lines) if lines else None, "coupons": list(coupon_codes)}
    request = _request(input_, flags)
    with _client(obj) as client:
        sent = client.checkout(request)
    _print_sent(as_json, sent)


@command(till, "refund")
@click.option("--txn", help="Document number of the original checkout.")
@click.option("--refund-id", help="Document number of this refund (required for a partial refund).")
@click.option("--line", "lines", multiple=True, metavar="CATEGORY=AMOUNT", help="A returned line; none = all.")
@click.option("--input", "input_", metavar="FILE|-", help="Read the JSON request from a file or stdin instead.")
def till_refund(obj, as_json, txn, refund_id, lines, input_):
    """Refund a checkout or some of its lines; queued (behind its checkout) when offline.

    \b
    Example:
      ANONCARD_SERVER=http://store7:8080 anoncard till refund --txn t3-000123 --refund-id R-77 --line dairy=3.49
    """
    request = _request(input_, {"txn": txn, "refund_id": refund_id, "lines": _lines(lines) if lines else None})
    with _client(obj) as client:
        sent = client.refund(request)
    _print_sent(as_json, sent)


@command(till, "redeem")
@click.option("--card", "card_code", help="The card code.")
@click.option("--reward", help="Reward name from the programme's catalogue.")
@click.option("--txn", help="Till document number of the redemption; a retry counts once.")
@click.option("--input", "input_", metavar="FILE|-", help="Read the JSON request from a file or stdin instead.")
def till_redeem(obj, as_json, card_code, reward, txn, input_):
    """Spend points on a reward (needs the server: never queued).

    \b
    Example:
      ANONCARD_SERVER=http://store7:8080 anoncard till redeem --card C1-... --reward coffee --txn t3-000124
    """
    request = _request(input_, {"card": card_code, "reward": reward, "txn": txn})
    with _client(obj) as client:
        result = client.redeem(request)
    _print(as_json, result, _receipt_text(_receipt(result)))


@command(till, "balance")
@click.option("--card", "card_code", help="The card code.")
@click.option("--input", "input_", metavar="FILE|-", help="Read the JSON request from a file or stdin instead.")
def till_balance(obj, as_json, card_code, input_):
    """Points and recent activity of a card (needs the server).

    \b
    Example:
      ANONCARD_SERVER=http://store7:8080 anoncard till balance --card C1-...
    """
    request = _request(input_, {"card": card_code})
    with _client(obj) as client:
        b = client.balance(request)
    _print(as_json, b, _balance_text(b))


@command(till, "enter")
@click.option("--card", "card_code", help="The card code, as scanned at the entrance column.")
@click.option("--input", "input_", metavar="FILE|-", help="Read the JSON request from a file or stdin instead.")
def till_enter(obj, as_json, card_code, input_):
    """Entrance column: the card's coupons (needs the server).

    \b
    Example:
      ANONCARD_SERVER=http://store7:8080 anoncard till enter --card C1-...
    """
    request = _request(input_, {"card": card_code})
    with _client(obj) as client:
        result = client.enter(request)
    coupons = result.get("coupons", [])
    text = [f"{'new ' if c['new'] else 'held'}  {c['text']} (valid until {c['expires']})\n      {c['code']}"
            for c in coupons]  # fmt: skip
    _print(as_json, result, "\n".join(text) or "no coupons today")


@command(till, "flush")
def till_flush(obj, as_json):
    """Send the queued checkouts and refunds now, in order; exit 20 if some are still queued.

    \b
    Example:
      ANONCARD_SERVER=http://store7:8080 anoncard till flush
    """
    from anoncard.client import Offline

    with _client(obj) as client:
        report = client.flush(force=True)
    text = f"delivered {len(report.delivered)}, dead letters {len(report.dead)}, still queued {report.remaining}"
    if report.replayed:
        text += f"\n({len(report.replayed)} had been credited before their answer was lost: not credited again)"
    _print(as_json, report.to_dict(), text)
    if report.remaining:
        exc: AnonCardError = report.refused or Offline(
            f"server: {report.stopped}; {report.remaining} requests still queued"
        )
        click.echo(f"Error: {exc.message}", err=True)
        sys.exit(exc.exit_code)


@command(till, "status")
def till_status(obj, as_json):
    """What the outbox holds: queued requests and dead letters (no server needed, no card codes shown).

    \b
    Example:
      anoncard till status --json
    """
    with _outbox(obj) as outbox:
        status = outbox.status()
    text = [f"queued {status.queued}"]
    if status.queued:
        text[0] += f" (oldest sale {status.oldest_sale}, last error {status.last_error})"
    text.append(f"dead letters {len(status.dead_letters)}")
    text += [
        f"  #{d.seq} {d.op} {d.document} ({d.sale_at}): HTTP {d.status} {d.code}: {d.message}"
        for d in status.dead_letters
    ]
    _print(as_json, status.to_dict(), "\n".join(text))


@command(till, "dismiss")
@click.argument("seq", type=int)
def till_dismiss(obj, as_json, seq):
    """Drop a dead letter once it has been dealt with (see 'till status').

    \b
    Example:
      anoncard till dismiss 17
    """
    with _outbox(obj) as outbox:
        if not outbox.dismiss(seq):
            raise PolicyViolation("argument 'seq': no dead letter with this number", field="seq")
    _print(as_json, {"dismissed": seq}, f"dead letter #{seq} dismissed")


__all__ = ["till"]
