"""A throwaway PostgreSQL cluster for the test run: initdb and pg_ctl in a temp dir, listening
only on a unix socket there, one fresh database per test from a migrated template.

As root, the server runs as the ``postgres`` user (pg_ctl refuses root) via runuser. The
test cluster runs with fsync off: a test kills server processes, never the machine, and a
killed server's writes sit in the page cache for its restart (synchronous_commit stays on,
so an acknowledged commit is in the WAL the restart replays). The benchmarks start a
``Cluster(durable=True)``: fsync and full page writes on, as in production.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

TEMPLATE = "anoncard_template"


def bindir() -> Path:
    """The newest PostgreSQL server programs on this machine (AssertionError if none: the
    PostgreSQL half of the suite is never skipped)."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    dirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True)
    dirs = [d for d in dirs if (d / "initdb").exists()]
    assert dirs, "PostgreSQL server programs (initdb, pg_ctl) are needed for the PostgreSQL tests"
    return dirs[0]


class Cluster:
    def __init__(self, *, durable: bool = False, settings: dict[str, str] | None = None) -> None:
        """``durable``: fsync and full page writes on (the server's defaults); ``settings``: more
        ``-c name=value`` server options."""
        self.durable = durable
        self.settings = dict(settings or {})
        self.dir = Path(tempfile.mkdtemp(prefix="anoncard-pg-"))
        self.data = self.dir / "data"
        self.bin = bindir()
        self.as_root = os.geteuid() == 0
        self.user = "postgres" if self.as_root else None
        self._names = itertools.count(1)
        if self.as_root:
            shutil.chown(self.dir, "postgres")
            os.chmod(self.dir, 0o755)

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / argv[0]), *argv[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True)

    def url(self, dbname: str) -> str:
        user = self.user or os.environ.get("USER", "") or "postgres"
        return f"postgresql://{user}@/{dbname}?host={self.dir}"

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-E", "UTF8", "--no-sync",
                  *(["-U", "postgres"] if self.as_root else []))  # fmt: skip
        self.start()

    def _options(self) -> str:
        options = f"-c listen_addresses='' -c unix_socket_directories={self.dir}"
        if not self.durable:
            options += " -c fsync=off -c full_page_writes=off"
        return options + "".join(f" -c {name}={value}" for name, value in self.settings.items())

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-o", self._options(), "-l", str(self.dir / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart_after_crash(self) -> None:
        """Start the server again after its postmaster was killed: its backends notice and exit,
        then the start replays the WAL (crash recovery)."""
        for _ in range(100):
            if self._run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 3:
                started = self._run("pg_ctl", "-D", str(self.data), "-o", self._options(), "-l",
                                    str(self.dir / "log"), "-w", "start", check=False)  # fmt: skip
                if started.returncode == 0:
                    return
            time.sleep(0.1)
        raise AssertionError("the killed PostgreSQL server did not start again")

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().splitlines()[0])

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.url("postgres"), autocommit=True)

    def make_template(self) -> None:
        from anoncard.postgres import PostgresStore

        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {TEMPLATE}")
        store = PostgresStore(self.url(TEMPLATE))
        store.close()

    def fresh_database(self, template: str = TEMPLATE) -> str:
        """A new database, a copy of ``template`` (by default the migrated, empty schema); its name."""
        name = f"t{os.getpid()}_{next(self._names)}"
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
        return name

    def drop(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


# the run's cluster, when the suite runs on PostgreSQL (set by the session fixture)
ACTIVE: Cluster | None = None


def give_own_database(home: Path) -> None:
    """On PostgreSQL: a fresh database for this home (a ``database.toml`` naming it)."""
    if ACTIVE is None:
        return
    home.mkdir(parents=True, exist_ok=True)
    url = ACTIVE.url(ACTIVE.fresh_database())
    (home / "database.toml").write_text(f'database = "{url}"\n', encoding="utf-8")


@contextmanager
def home_database(home: Path) -> Iterator[None]:
    """On PostgreSQL: a fresh database for a home that a command will create (it must not
    exist yet), named in the home's ``database.toml`` once it does."""
    if ACTIVE is None:
        yield
        return
    url = ACTIVE.url(ACTIVE.fresh_database())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ANONCARD_DATABASE_URL", url)
        yield
    (home / "database.toml").write_text(f'database = "{url}"\n', encoding="utf-8")


def copy_database(source: Path, dest: Path) -> None:
    """On PostgreSQL: give the copied home ``dest`` a copy of ``source``'s own database."""
    named = source / "database.toml"
    if ACTIVE is None or not named.exists():
        return
    original = named.read_text(encoding="utf-8").split("@/", 1)[1].split("?", 1)[0]
    name = ACTIVE.fresh_database(template=original)
    (dest / "database.toml").write_text(f'database = "{ACTIVE.url(name)}"\n', encoding="utf-8")
