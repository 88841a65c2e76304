"""What readers are handed: the published copy of a day, and files streamed back in blocks.

``published_copy`` is the one place that picks the file an identity reads, so masking by
entitlement (a masked or a clear copy) is one change here and nowhere else.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from flux_pipelines.access.identity import Identity
from flux_pipelines.errors import StorageNotConfined
from flux_pipelines.ingest.confine import ConfinedDir

READ_BLOCK = 1 << 20
JSON_BATCH_ROWS = 10_000
# O_NONBLOCK: a FIFO planted at the name must not hang the reader (refused below).
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def published_copy(home: Path, identity: Identity, agency: str, dataset: str, day: dt.date) -> Path:
    """The published file of (agency, dataset, day) that ``identity`` reads.

    An identity entitled to the agency's personal data (its personal-data group) and an
    operator read the entitled copy when the day has one (personal columns in clear); every
    other reader gets the analysts' copy (personal columns hashed, restricted ones masked).
    The caller has already authorized ``read_published`` for ``agency``."""
    from flux_pipelines.access.masking import entitled_file
    from flux_pipelines.resources.warehouse import FluxWarehouse

    if identity.role == "operator" or agency in identity.personal_data:
        entitled = entitled_file(home, agency, dataset, day.isoformat())
        if entitled.is_file():
            return entitled
    return FluxWarehouse(home=str(home)).published_file(agency, dataset, day)


def open_published(path: Path) -> BinaryIO | None:
    """The published file opened without following a link at its name; None when absent.
    Held open, it stays the copy that was there when the read began, even if a load swaps
    in a new one meanwhile."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise StorageNotConfined(str(path), "something that is not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def confined_file(folder: ConfinedDir, name: str) -> BinaryIO | None:
    """``name`` in ``folder`` opened for streaming (a regular file, never a link); None when
    absent. Closes ``folder``: the returned handle is all the caller needs."""
    try:
        if folder.lstat(name) is None:
            return None
        with folder.open_file(name) as handle:
            return handle.reopen()
    finally:
        folder.close()


def blocks(handle: BinaryIO) -> Iterator[bytes]:
    """The file in blocks of ``READ_BLOCK``, closed at the end (or when the client leaves)."""
    with handle:
        while block := handle.read(READ_BLOCK):
            yield block


def parquet_as_json(handle: BinaryIO, header: dict[str, str]) -> Iterator[bytes]:
    """``{...header, "rows": [...]}`` streamed batch by batch: memory holds one batch, not
    the day. Values are written as polars writes JSON (dates ISO 8601, decimals as exact
    strings such as ``"1.50"``)."""
    import polars as pl
    import pyarrow.parquet as pq

    with handle:
        reader = pq.ParquetFile(handle)
        yield (json.dumps(header)[:-1] + ', "rows": [').encode()
        first = True
        for batch in reader.iter_batches(batch_size=JSON_BATCH_ROWS):
            lines = pl.DataFrame(batch).write_ndjson().splitlines()
            if lines:
                yield (("" if first else ",") + ",".join(lines)).encode()
                first = False
        yield b"]}"
