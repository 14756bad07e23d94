"""What every benchmark shares: writing its result as JSON, replaying recorded days."""

from __future__ import annotations

import json
import subprocess
import sys
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


def fit_model(home: Path, at: datetime, seed: int = 0) -> dict:
    """The nightly fit of the suggestion model as its own process (as the operator's job runs),
    on a clock set to ``at``, with the programme's discovery target (0.07: the model's discovery
    slot is on, the slower path at the entrance): its report, with its wall time and peak
    resident memory."""
    out = subprocess.run([sys.executable, "-c", _FIT_SCRIPT, str(home), at.isoformat(), str(seed)],
                         capture_output=True, text=True)  # fmt: skip
    if out.returncode:
        raise SystemExit(f"the fit failed:\n{out.stderr}")
    return json.loads(out.stdout)


_FIT_SCRIPT = """
import json, resource, sys, time
from datetime import datetime
from anoncard import Service
home, at, seed = sys.argv[1], datetime.fromisoformat(sys.argv[2]), int(sys.argv[3])
t = time.perf_counter()
with Service.open(home, clock=lambda: at) as svc:
    report = svc.fit_suggestions(seed=seed, discovery_target=0.07)
    report["discovery_weight"] = svc.suggestion_model().discovery_weight
report["wall_s"] = round(time.perf_counter() - t, 1)
report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
print(json.dumps(report))
"""
