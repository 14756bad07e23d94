"""Files anoncard writes and reads on a file system other local users may share.

Design overview. Every output holds something private (card secrets in QR files, key
material, pseudonymous histories in backups, an audit's findings), so each one is

* created exclusively (``O_CREAT | O_EXCL``) and never through a link (``O_NOFOLLOW``):
  a name planted in advance - a link to a file someone wants overwritten or read, a
  dangling link, a link to a directory - makes the write fail instead of following it;
* owner-only (mode 0600) from its first byte: the mode is given to ``open``, never
  fixed by a ``chmod`` afterwards;
* durable where it matters (``fsync`` of the file and of its directory) before the
  caller goes on to record that it exists;
* replaced, where replacing is its job (the policy file, the key ring, a printer
  spool), through a private temporary file renamed into place: a rename replaces a
  planted link itself and never writes through it, and readers never see half a file.

Directories are opened once (``O_DIRECTORY | O_NOFOLLOW``) and every file is created
relative to that descriptor, so the checks made on the directory hold for the files
made in it. A directory for files with predictable names (QR print runs) must be ours
and writable by nobody else.

Refusals raise the caller's error class (PolicyViolation by default) naming the option,
never the value; a write that fails (a full disk) raises :class:`OutputError`, after
removing what it had created.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path

from .errors import AnonCardError, OutputError, PolicyViolation

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def temp_name(name: str) -> str:
    """The private temporary name a file called ``name`` is written under before its rename."""
    return f".{name}.{secrets.token_hex(8)}.tmp"


class Directory:
    """An opened directory: files are made relative to its descriptor. Use as a context manager.

    Raises (on open):
        the given ``error`` class: the directory is missing (and not to be created), is a
        link or not a directory, or (``private``) is not ours or others may write to it;
        with ``private=False`` a directory others may write to is refused unless it has the
        sticky bit (there nobody else can rename or delete our files).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        field: str,
        create: bool = False,
        private: bool = False,
        error: type[AnonCardError] = PolicyViolation,
    ) -> None:
        self.path = Path(path)
        self.field, self.error = field, error
        if create:
            try:
                self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            except FileExistsError:
                raise self._refused("exists and is not a directory") from None
            except OSError as exc:
                raise self._refused(f"cannot create the directory ({_reason(exc)})") from None
        try:
            self.fd = os.open(self.path, _DIR)
        except FileNotFoundError:
            raise self._refused("the directory does not exist") from None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise self._refused("is a link or not a directory; give a real directory") from None
            raise self._refused(f"cannot open the directory ({_reason(exc)})") from None
        try:
            self._check(os.fstat(self.fd), private)
        except BaseException:
            os.close(self.fd)
            raise

    def _refused(self, rule: str) -> AnonCardError:
        return self.error(f"field '{self.field}': {rule}", field=self.field)

    def _check(self, st: os.stat_result, private: bool) -> None:
        others_write = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if private:
            if st.st_uid != os.geteuid():
                raise self._refused("the directory belongs to another user; use a directory of your own")
            if others_write:
                raise self._refused("group or others may write to the directory; use one only you can write to")
        elif others_write and not st.st_mode & stat.S_ISVTX:
            raise self._refused("others may write to the directory (and it has no sticky bit); use another")

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> Directory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _failed(self, what: str, exc: OSError) -> OutputError:
        return OutputError(f"field '{self.field}': {what} ({_reason(exc)})", field=self.field)

    def _exists_error(self) -> AnonCardError:
        return self._refused("a file or link of that name exists; choose a new name")

    def create(self, name: str, data: bytes, *, durable: bool = True) -> Path:
        """Write ``data`` to a new file ``name`` here (exclusive, no link followed, mode 0600).

        Raises:
            the directory's error class: ``name`` exists already (as a file or any link).
            OutputError: the write failed (nothing is left behind).
        """
        try:
            fd = os.open(name, _CREATE, 0o600, dir_fd=self.fd)
        except FileExistsError:
            raise self._exists_error() from None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EISDIR):
                raise self._exists_error() from None
            raise self._failed("cannot create the file", exc) from None
        try:
            _write_all(fd, data, durable=durable)
        except OSError as exc:
            self.remove(name)
            raise OutputError(
                f"field '{self.field}': the file could not be written ({_reason(exc)}); nothing was kept",
                field=self.field,
            ) from None
        if durable:
            self.sync()
        return self.path / name

    def replace(self, name: str, data: bytes, *, durable: bool = True) -> Path:
        """Write ``data`` to ``name`` here, replacing the regular file of that name if there is one:
        a private temporary file (mode 0600), then a rename. A link or anything but a regular file
        under ``name`` is refused, never replaced or followed.

        Raises:
            the directory's error class: ``name`` is a link or not a regular file.
            OutputError: the write failed (the old file is kept as it was).
        """
        self._refuse_non_regular(name)
        tmp = temp_name(name)
        self.create(tmp, data, durable=durable)
        try:
            os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except OSError as exc:
            self.remove(tmp)
            raise self._failed("cannot replace the file", exc) from None
        if durable:
            self.sync()
        return self.path / name

    def _refuse_non_regular(self, name: str) -> None:
        try:
            st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if not stat.S_ISREG(st.st_mode):
            raise self._refused("a link or something other than a regular file has that name; remove it first")

    def publish(self, tmp: str, name: str) -> Path:
        """Give the finished private file ``tmp`` its final ``name`` without replacing anything:
        a hard link (which never follows a link at ``name``), then ``tmp`` is removed. Where the
        file system has no hard links, a rename after checking that ``name`` is free.

        Raises:
            the directory's error class: ``name`` exists (as a file or any link).
        """
        try:
            os.link(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd, follow_symlinks=False)
        except FileExistsError:
            raise self._exists_error() from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise self._failed("cannot name the file", exc) from None
            try:
                os.stat(name, dir_fd=self.fd, follow_symlinks=False)
            except FileNotFoundError:
                os.rename(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
            else:
                raise self._exists_error() from None
        else:
            self.remove(tmp)
        self.sync()
        return self.path / name

    def keep(self, name: str) -> str | bytes | None:
        """Keep the current file ``name`` so :meth:`put_back` can restore it after a replace: a hard
        link under a private temporary name (it needs no free space), or, where the file system
        has no hard links, its bytes; ``None`` when there is no such file."""
        tmp = temp_name(name)
        try:
            os.link(name, tmp, src_dir_fd=self.fd, dst_dir_fd=self.fd, follow_symlinks=False)
            return tmp
        except FileNotFoundError:
            return None
        except OSError:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.fd)
            with os.fdopen(fd, "rb") as fh:
                return fh.read()

    def put_back(self, kept: str | bytes | None, name: str) -> None:
        """Restore ``name`` to what :meth:`keep` kept (an atomic rename when it kept a link)."""
        if kept is None:
            self.remove(name)
        elif isinstance(kept, str):
            os.replace(kept, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
            self.sync()
        else:
            self.replace(name, kept)

    def drop(self, kept: str | bytes | None) -> None:
        """Forget what :meth:`keep` kept (delete the link, if it is still there)."""
        if isinstance(kept, str):
            self.remove(kept)

    def remove(self, name: str) -> None:
        """Delete ``name`` here if it exists (a link is deleted, never its target)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self.fd)

    def sync(self) -> None:
        """Make the directory's entries durable (new names, renames)."""
        try:
            os.fsync(self.fd)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EBADF):  # some file systems cannot sync a directory
                raise self._failed("cannot sync the directory", exc) from None


def _write_all(fd: int, data: bytes, *, durable: bool) -> None:
    """Write every byte to ``fd`` (fsync'd if ``durable``), then close it."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def create(path: str | Path, data: bytes, *, field: str, error: type[AnonCardError] = PolicyViolation) -> Path:
    """Write a new owner-only file at ``path``; never replaces and never follows a link.

    Raises:
        ``error``: the file (or a link) exists, or its directory is missing, not a directory,
            or open to others without the sticky bit.
        OutputError: the write failed; nothing is left behind.
    """
    path = Path(path)
    with Directory(path.parent, field=field, error=error) as d:
        return d.create(path.name, data)


def replace(path: str | Path, data: bytes, *, field: str, error: type[AnonCardError] = PolicyViolation) -> Path:
    """Write ``path`` through a private temporary file and a rename (readers see the old file or
    the new one, never half of one).

    Raises:
        ``error``: ``path`` is a link or not a regular file, or its directory is refused.
        OutputError: the write failed; the old file is unchanged.
    """
    path = Path(path)
    with Directory(path.parent, field=field, error=error) as d:
        return d.replace(path.name, data)


def read_text(path: str | Path, *, error: type[AnonCardError], what: str, missing: str = "") -> str:
    """The UTF-8 text of a file the caller needs.

    Raises:
        ``error``: the file is missing (the message adds ``missing``), a directory, unreadable
            or not UTF-8 text. The message names the file, never its content.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{what}: {path} not found{missing}") from None
    except IsADirectoryError:
        raise error(f"{what}: {path} is a directory, not a file") from None
    except OSError as exc:
        raise error(f"{what}: cannot read {path} ({_reason(exc)})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{what}: {path} is not UTF-8 text") from None
