"""Receiving an upload: streamed in bounded blocks to a hidden ``.part`` name the landing
sensor ignores, hashed on the way, flushed to disk, then renamed into place in one step.

Memory stays at one block however large the file; a body over the limit stops the upload
at the first byte too many and leaves nothing behind, not even the staged part. Every
write, rename and removal goes through the destination folder's descriptor, opened without
following a link (``ingest/confine.py``), so nothing is written outside that folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool

from flux_pipelines.ingest.confine import ConfinedDir
from flux_pipelines.intake.checks import SNIFF_BYTES, check_parquet_tail, sniff
from flux_pipelines.intake.errors import IntakeRefused

WRITE_BLOCK = 1 << 20  # bytes held before a write: the memory an upload costs
MAX_BYTES_ENV = "FLUX_INTAKE_MAX_BYTES"
DEFAULT_MAX_BYTES = 2 << 30  # 2 GiB: a large agency file; the loader streams far larger


def max_bytes_setting(explicit: int | None = None) -> int:
    """The upload size limit: ``explicit``, else $FLUX_INTAKE_MAX_BYTES, else 2 GiB."""
    from flux_pipelines.errors import ConfigurationError

    raw = explicit if explicit is not None else os.environ.get(MAX_BYTES_ENV)
    if raw is None or raw == "":
        return DEFAULT_MAX_BYTES
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{MAX_BYTES_ENV}={raw!r} is not a number of bytes") from None
    if value <= 0:
        raise ConfigurationError(f"the intake size limit must be positive, not {value}")
    return value


def too_large(limit: int) -> IntakeRefused:
    return IntakeRefused(
        413,
        "too_large",
        f"the file is larger than the intake's limit of {limit:,} bytes; split the delivery "
        "into several files or ask the operators for a higher limit",
    )


@dataclass(frozen=True)
class Received:
    sha256: str
    size: int


class StagedFile:
    """A file being received into ``folder`` under a hidden name until ``commit``.

    Owns ``folder`` (closed by a successful ``commit``, or by ``discard``)."""

    def __init__(self, folder: ConfinedDir, name: str) -> None:
        self.folder = folder
        self.name = name
        self.temp = f".{name}.{uuid.uuid4().hex[:12]}.part"
        self._fd: int | None = folder.create_file(self.temp)

    @property
    def path(self) -> str:
        """Where the committed file is, for a library that wants a path."""
        return str(self.folder.path / self.name)

    def write(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def flush(self) -> None:
        """The bytes on disk before anyone is told they arrived."""
        assert self._fd is not None
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None

    def commit(self) -> None:
        """Rename into place (atomic; a file of that name is replaced: a re-delivery), then
        flush the folder so the new name survives a power cut."""
        self.folder.replace(self.temp, self.name)  # on failure ``discard`` still can clean up
        os.fsync(self.folder.fileno())
        self.folder.close()

    def discard(self) -> None:
        """Remove the staged part (never the final name) and let the folder go."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        try:
            self.folder.unlink(self.temp)
        finally:
            self.folder.close()


async def receive(
    body: AsyncIterator[bytes],
    open_staged: Callable[[], StagedFile],
    *,
    fmt: str,
    max_bytes: int,
) -> tuple[StagedFile, Received]:
    """Stream ``body`` into a file ``open_staged`` makes (only once the first bytes passed the
    sniff), flushed to disk; the caller commits or discards it. ``IntakeRefused`` (413 over
    ``max_bytes``, 415 for content that is not ``fmt``, 400 for an empty body) leaves no file;
    so does a client that goes away mid-upload."""
    digest = hashlib.sha256()
    size = 0
    block = bytearray()
    tail = b""
    staged: StagedFile | None = None
    try:
        async for chunk in body:
            size += len(chunk)
            if size > max_bytes:
                raise too_large(max_bytes)
            block += chunk
            tail = (tail + chunk)[-len(b"PAR1") :]
            if len(block) >= WRITE_BLOCK:
                staged = staged or await _open(open_staged, block, fmt)
                await _write(staged, block, digest)
        if size == 0:
            raise IntakeRefused(400, "empty", "the request body is empty: send the file's bytes")
        check_parquet_tail(tail, fmt)
        staged = staged or await _open(open_staged, block, fmt)
        await _write(staged, block, digest)
        await run_in_threadpool(staged.flush)
    except BaseException:
        if staged is not None:
            with contextlib.suppress(OSError):  # the original failure is the one to report
                staged.discard()
        raise
    return staged, Received(sha256=digest.hexdigest(), size=size)


async def _open(open_staged: Callable[[], StagedFile], block: bytearray, fmt: str) -> StagedFile:
    """The staged file, made only once the first bytes say the content is ``fmt``."""
    sniff(bytes(block[:SNIFF_BYTES]), fmt)
    return await run_in_threadpool(open_staged)


async def _write(staged: StagedFile, block: bytearray, digest: hashlib._Hash) -> None:
    """Hash and write ``block`` off the event loop, emptying it."""
    data = bytes(block)
    block.clear()
    await run_in_threadpool(_write_and_hash, staged, data, digest)


def _write_and_hash(staged: StagedFile, data: bytes, digest: hashlib._Hash) -> None:
    digest.update(data)
    staged.write(data)
