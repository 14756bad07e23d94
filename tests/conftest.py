"""Shared fixtures: a fixed clock, a fresh home, an open service."""

from __future__ import annotations

from datetime import date, datetime, time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from anoncard import Service, init_home

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("default")

DAY = date(2015, 3, 2)


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
