"""Peak memory of one measurement, true to the measurement.

``ru_maxrss`` is a poor peak here: Linux carries the high-water mark of the memory a
process had before ``exec`` (a child forked from a large bench parent reports the parent's
size), and within ``flux bench`` every part runs in one process after the others. So the
peak is the process image's own high-water mark (``VmHWM``), reset where a part starts.
"""

from __future__ import annotations

import contextlib
import resource
from pathlib import Path

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak() -> None:
    """Start a new peak from the current size (Linux: "5" resets the high-water mark)."""
    # not Linux, or not permitted: the peak then also covers earlier work
    with contextlib.suppress(OSError):
        CLEAR_REFS.write_text("5")


def peak_rss_mb() -> float:
    """The peak resident memory since the process started or ``reset_peak``, in MB."""
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
