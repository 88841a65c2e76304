"""Crash points: named places where a test can make the running process die for real.

Crash-recovery tests need a run worker killed *at a known point* (after staging, after the
insert, after the commit...), including runs the daemon launched, whose environment the
test does not control. A point is armed by a file ``$FLUX_HOME/.faults/<point>``; the first
process to reach the point removes the file (one shot) and acts on its content:

- ``kill`` (default): ``SIGKILL`` itself, as the OOM killer or a lost host would;
- ``sleep <seconds>``: pause, so a test can act while the run is in flight.

Unarmed points cost one ``stat`` call.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from flux_pipelines.home import resolve_home

FAULTS_DIR = ".faults"
POINTS = (
    "ingest.started",
    "loader.staged",
    "loader.inserted",
    "loader.committed",
    "ingest.published",
)


def faults_dir(home: str | Path | None = None) -> Path:
    return resolve_home(home) / FAULTS_DIR


def arm(point: str, action: str = "kill", home: str | Path | None = None) -> Path:
    """Arm ``point`` for the next process that reaches it."""
    if point not in POINTS:
        raise ValueError(f"unknown crash point {point!r}; known: {', '.join(POINTS)}")
    folder = faults_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / point
    path.write_text(action, encoding="utf-8")
    return path


def crash_point(point: str) -> None:
    """Die or pause here if a test armed this point; otherwise do nothing."""
    path = faults_dir() / point
    try:
        action = path.read_text(encoding="utf-8").strip() or "kill"
        path.unlink()
    except FileNotFoundError:
        return
    if action.startswith("sleep"):
        time.sleep(float(action.split()[1]))
        return
    os.kill(os.getpid(), signal.SIGKILL)
