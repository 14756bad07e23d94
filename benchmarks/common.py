"""What every benchmark shares: writing its result as JSON, replaying recorded days."""

from __future__ import annotations

import json
from datetime import date, datetime, time
from pathlib import Path


def write_json(path: Path | None, result: dict) -> dict:
    """Write ``result`` to ``path`` (if given), creating the folder; return it."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def on(svc, when: date | datetime):
    """``svc`` with its clock moved to ``when``: a replay of recorded days runs on the store's
    own (simulated) time, as the service takes time from its clock only."""
    moment = when if isinstance(when, datetime) else datetime.combine(when, time(12))
    svc.clock = lambda: moment
    return svc
