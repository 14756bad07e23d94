"""What every benchmark shares: writing its result as JSON."""

from __future__ import annotations

import json
from pathlib import Path


def write_json(path: Path | None, result: dict) -> dict:
    """Write ``result`` to ``path`` (if given), creating the folder; return it."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
    return result
