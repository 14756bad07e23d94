"""QR rendering of card codes (and, later, coupons): PNG, SVG and terminal text."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import qrcode
import qrcode.constants

from .errors import PolicyViolation

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


def prepare(directory: Path, prefix: str, fmt: str, *, fresh: bool) -> Path:
    """Create ``directory`` (mode 0700) and prove it takes files, before anything is stored.

    Raises:
        PolicyViolation: the directory cannot be created or written, or (``fresh``) it
            already holds ``prefix*.fmt`` files an earlier run wrote: overwriting them
            would lose codes of cards that exist.
    """
    directory = Path(directory)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=directory).close()
    except OSError as exc:
        raise PolicyViolation(
            f"field 'qr-dir': cannot write QR files there ({exc.strerror or type(exc).__name__})", field="qr_dir"
        ) from None
    if fresh and next(directory.glob(f"{prefix}*.{fmt}"), None) is not None:
        raise PolicyViolation(
            f"field 'qr-dir': already holds {prefix}*.{fmt} files from an earlier run; use an empty directory",
            field="qr_dir",
        )
    return directory


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
