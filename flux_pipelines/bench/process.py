"""Measurements in fresh Python processes: each pays its own interpreter start, imports and
memory, as a Dagster run worker does, and answers with one JSON line on stdout."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from flux_pipelines.home import PROJECT_ROOT


def run_python(
    args: list[str], *, env: dict[str, str] | None = None, what: str
) -> tuple[dict[str, Any], float]:
    """Run ``python <args>`` from the project root; (its last stdout line as JSON, wall
    seconds). A failed process raises RuntimeError naming ``what`` with its stderr tail."""
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=Path(PROJECT_ROOT),
    )
    wall = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"{what} failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1]), wall
