"""QR rendering of card codes (and, later, coupons): PNG, SVG and terminal text."""

from __future__ import annotations

import io
import os
from pathlib import Path

import qrcode
import qrcode.constants

FORMATS = ("png", "svg")


def _qr(text: str) -> qrcode.QRCode:
    # card codes are upper-case Crockford base 32 plus '-': QR alphanumeric mode
    q = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=4)
    q.add_data(text)
    q.make(fit=True)
    return q


def render(text: str, fmt: str) -> bytes:
    """The QR code of ``text`` as PNG or SVG bytes."""
    if fmt == "png":
        from qrcode.image.pure import PyPNGImage as factory
    elif fmt == "svg":
        from qrcode.image.svg import SvgPathImage as factory
    else:
        raise ValueError(f"QR format must be one of {', '.join(FORMATS)}")
    buf = io.BytesIO()
    _qr(text).make_image(image_factory=factory).save(buf)
    return buf.getvalue()


def write(text: str, directory: Path, name: str, fmt: str) -> Path:
    """Write the QR code of ``text`` to ``directory/name.fmt`` (mode 0600: it holds a card secret)."""
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"{name}.{fmt}"
    data = render(text, fmt)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path


def terminal(text: str) -> str:
    """A preview for a terminal, two modules per character cell."""
    buf = io.StringIO()
    _qr(text).print_ascii(out=buf, invert=True)
    return buf.getvalue()
