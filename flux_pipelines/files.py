"""File helpers every stage shares: a file's sha256, and replacing a file whole.

One place for each so that every receipt, pointer, manifest, anchor and published copy is
hashed in flat memory and replaced the same way: written beside its target under a unique
hidden temporary name, renamed over it (readers see the old file or the whole new one), the
temporary file removed whatever happens.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def sha256_file(source: Path | BinaryIO) -> str:
    """The hex sha256 of a file's bytes, streamed (flat memory for any size): a path, or a
    binary handle read from where it stands to its end."""
    if isinstance(source, Path):
        with source.open("rb") as handle:
            return sha256_file(handle)
    digest = hashlib.sha256()
    while chunk := source.read(1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def replacing(target: Path, *, durable: bool = False) -> Iterator[Path]:
    """A temporary path beside ``target`` for the new file; when the block ends without an
    error it replaces ``target`` in one rename, and it is removed in every case.

    ``durable``: the new file is fsync'd before the rename, and the folder after it when
    ``target`` is new, so that a crash leaves neither an empty file nor a lost name (for
    state that is not cheap to rebuild; receipts and caches skip the disk flush).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    created = not target.exists()
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        if durable:
            fsync_path(tmp)
        os.replace(tmp, target)
        if durable and created:
            fsync_path(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(
    target: Path, data: bytes | str, *, durable: bool = False, mode: int = 0o666
) -> None:
    """Replace ``target`` with ``data`` (text is written as UTF-8) in one rename; ``mode`` is
    the new file's creation mode (the umask still applies: 0o600 keeps it private from the
    first byte)."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with replacing(target, durable=durable) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(payload)


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's entry to disk (a folder: the names in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
