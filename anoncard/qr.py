"""QR rendering of card codes (and, later, coupons): PNG, SVG and terminal text."""

from __future__ import annotations

import contextlib
import io
import os
import stat
from pathlib import Path

import qrcode
import qrcode.constants

from . import files
from .errors import OutputError, PolicyViolation

FORMATS = ("png", "svg")
FIELD = "qr-dir"


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
    """Create ``directory`` (mode 0700) and check it is fit for card secrets, before anything is stored.

    The directory must be a real directory (not a link), ours, and writable by nobody
    else: its file names are predictable, so another user who could write there could
    plant links under them or swap our files.

    Raises:
        PolicyViolation: the directory cannot be created, is a link, is another user's or
            open to group or others' writes, or (``fresh``) already holds ``prefix*.fmt``
            files an earlier run wrote: overwriting them would lose codes of cards that exist;
            or one of those names is a link or not a regular file.
    """
    with files.Directory(directory, field=FIELD, create=True, private=True):
        pass
    directory = Path(directory)
    earlier = sorted(directory.glob(f"{prefix}*.{fmt}"))
    if fresh and earlier:
        raise PolicyViolation(
            f"field 'qr-dir': already holds {prefix}*.{fmt} files from an earlier run; use an empty directory",
            field=FIELD,
        )
    if any(not stat.S_ISREG(path.lstat().st_mode) for path in earlier):  # a spool holds only our files
        raise PolicyViolation(
            f"field 'qr-dir': holds a link or something other than a file named {prefix}*.{fmt}; remove it",
            field=FIELD,
        )
    return directory


def write_run(texts: list[str], directory: Path, prefix: str, fmt: str) -> list[Path]:
    """Write one new QR file per text, ``prefix000001.fmt`` on, each created exclusively with mode
    0600 and made durable: all of them, or (on any failure) none - the ones written are removed.

    Raises:
        PolicyViolation: the directory is refused (see :func:`prepare`), or a file name is
            taken (by a file or a planted link).
        OutputError: a file could not be written (a full disk).
    """
    names = [f"{prefix}{i:06d}.{fmt}" for i in range(1, len(texts) + 1)]
    with files.Directory(directory, field=FIELD, create=True, private=True) as d:
        done: list[str] = []
        try:
            for text, name in zip(texts, names, strict=True):
                d.create(name, render(text, fmt), durable=False)
                done.append(name)
            for name in done:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=d.fd)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            d.sync()
        except BaseException as exc:
            for name in done:
                d.remove(name)
            if isinstance(exc, OSError):
                raise OutputError(
                    f"field 'qr-dir': the QR files could not be written ({exc.strerror}); none was kept", field=FIELD
                ) from None
            raise
    return [Path(directory) / name for name in names]


def remove(paths: list[Path]) -> None:
    """Delete QR files written for cards that were then not stored (their codes are void)."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def write(text: str, directory: Path, name: str, fmt: str) -> Path:
    """Write the QR code of ``text`` to ``directory/name.fmt`` (mode 0600: it holds a secret),
    replacing an earlier file of that name (a printer spool) but never a link.

    Raises:
        PolicyViolation: the directory is refused (see :func:`prepare`), or a link or
            anything but a regular file has that name.
        OutputError: the file could not be written.
    """
    with files.Directory(directory, field=FIELD, create=True, private=True) as d:
        return d.replace(f"{name}.{fmt}", render(text, fmt))


def terminal(text: str) -> str:
    """A preview for a terminal, two modules per character cell."""
    buf = io.StringIO()
    _qr(text).print_ascii(out=buf, invert=True)
    return buf.getvalue()
