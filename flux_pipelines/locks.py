"""Advisory file locks (flock on a sibling lock file), the one way Flux serialises writers of
a shared file across processes: the audit trail, the access-role cache, a witness store."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive_lock(lock: Path, *, mode: int = 0o600) -> Iterator[None]:
    """Hold an exclusive flock on ``lock`` (created with ``mode`` if absent) for the block;
    closing the descriptor releases it, also when the process dies."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
