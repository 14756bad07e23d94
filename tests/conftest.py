"""Shared fixtures: a fixed clock, a fresh home, an open service, the backend under test.

The whole suite runs on each backend: ``--backend sqlite`` (the default) or ``--backend
postgres`` (or ``ANONCARD_TEST_BACKEND``). On PostgreSQL the run starts its own cluster and
gives every test a fresh database through ``ANONCARD_DATABASE_URL``, which every home the
test opens (in this process or in a CLI or server subprocess) uses. Tests about SQLite's
own files carry the ``sqlite_only`` mark, with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date, datetime, time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from anoncard import Service, init_home

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("default")

DAY = date(2015, 3, 2)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend",
        choices=("sqlite", "postgres"),
        default=os.environ.get("ANONCARD_TEST_BACKEND", "sqlite"),
        help="storage backend the suite runs against (default: $ANONCARD_TEST_BACKEND or sqlite)",
    )


def pytest_configure(config: pytest.Config) -> None:
    os.environ["ANONCARD_TEST_BACKEND"] = config.getoption("--backend")  # for module-level sizes
    config.addinivalue_line("markers", "sqlite_only(reason): a test of SQLite's own files or behaviour")
    config.addinivalue_line("markers", "postgres_only: a test of the PostgreSQL backend's own behaviour")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    backend = config.getoption("--backend")
    for item in items:
        mark = item.get_closest_marker("sqlite_only")
        if backend == "postgres" and mark is not None:
            item.add_marker(pytest.mark.skip(reason=f"SQLite only: {mark.kwargs.get('reason', mark.args)}"))
        if backend == "sqlite" and item.get_closest_marker("postgres_only") is not None:
            item.add_marker(pytest.mark.skip(reason="runs in the PostgreSQL pass of the suite"))


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest) -> str:
    return request.config.getoption("--backend")


@pytest.fixture(scope="session", autouse=True)
def pg_cluster(backend: str):
    """On PostgreSQL: the run's own cluster (started first, removed at the end)."""
    if backend != "postgres":
        yield None
        return
    from tests import pg_cluster

    cluster = pg_cluster.Cluster()
    try:
        cluster.init()
        cluster.make_template()
        pg_cluster.ACTIVE = cluster
        yield cluster
    finally:
        pg_cluster.ACTIVE = None
        cluster.remove()


@pytest.fixture(autouse=True)
def database(request: pytest.FixtureRequest, backend: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str | None]:
    """On PostgreSQL: a fresh database for this test, the URL every home opened uses."""
    if backend != "postgres" or request.node.get_closest_marker("sqlite_only") is not None:
        monkeypatch.delenv("ANONCARD_DATABASE_URL", raising=False)
        yield None
        return
    cluster = request.getfixturevalue("pg_cluster")
    name = cluster.fresh_database()
    url = cluster.url(name)
    monkeypatch.setenv("ANONCARD_DATABASE_URL", url)
    yield url
    cluster.drop(name)


def fixed_clock() -> datetime:
    return datetime(2015, 3, 2, 10, 30)


def clock_at(day: date | datetime):
    """A fixed clock showing ``day`` (10:30 when only a day is given)."""
    now = day if isinstance(day, datetime) else datetime.combine(day, time(10, 30))
    return lambda: now


def on(svc: Service, day: date | datetime) -> Service:
    """Move the service's clock to ``day``: operational time, as a store day passes."""
    svc.clock = clock_at(day)
    return svc


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    init_home(path, today=DAY)
    return path


@pytest.fixture
def svc(home: Path):
    service = Service.open(home, clock=fixed_clock, synchronous="NORMAL")
    yield service
    service.close()


def basket(*pairs: tuple[str, str]) -> list[dict]:
    return [{"category": c, "amount": a} for c, a in pairs]
