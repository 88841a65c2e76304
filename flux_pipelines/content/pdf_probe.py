"""PDF facts (pages, encryption) read by pypdf in a child process with a deadline.

pypdf in ``strict=False`` mode repairs what it can, and on hostile input (a cyclic page
tree, a huge object stream, a broken cross-reference table) that repair can take minutes or
gigabytes. A thread cannot be stopped, so the parent hands the already-open, confined file
descriptors to one child process per batch (``pass_fds``: the child opens no path), reads
one JSON line per file, and kills the child when a file takes longer than ``TIMEOUT_S``;
that file is reported as malformed and a new child takes the rest. The child limits its own
address space (``MEMORY_LIMIT_BYTES``). pypdf reads through the file object it is given
(seeking, not slurping), and Flux passes it no file over ``PDF_MAX_BYTES``: such a PDF is
stored without a page count, and says so.

Run as a script (``python -I pdf_probe.py FD...``), this module imports only the standard
library and pypdf, so a child starts in a fraction of a second.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

PDF_MAX_BYTES = 512 << 20
TIMEOUT_S = 20.0
BATCH = 64  # descriptors handed to one child
MEMORY_LIMIT_BYTES = 2 << 30


@dataclass(frozen=True)
class PdfFacts:
    """What pypdf could say of one PDF."""

    pages: int | None = None
    encrypted: bool = False
    opens: bool = False  # an encrypted PDF that opens with an empty password
    error: str | None = None  # why it could not be read (pypdf's words, or the deadline)


def probe(fds: Sequence[int], *, timeout_s: float = TIMEOUT_S) -> list[PdfFacts]:
    """Facts of each PDF open at ``fds`` (read from offset 0), in order."""
    results: list[PdfFacts] = []
    while len(results) < len(fds):
        batch = list(fds[len(results) : len(results) + BATCH])
        results.extend(_run_child(batch, timeout_s))
    return results


def _run_child(fds: list[int], timeout_s: float) -> list[PdfFacts]:
    """Facts of as many of ``fds`` as one child gives before it ends or overruns (at least
    one: a file the child did not finish is reported with why)."""
    child = subprocess.Popen(
        [sys.executable, "-I", os.path.abspath(__file__), *map(str, fds)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        pass_fds=fds,
    )
    assert child.stdout is not None
    results: list[PdfFacts] = []
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(child.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout_s
        while len(results) < len(fds):
            if b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                results.append(_parse(line))
                deadline = time.monotonic() + timeout_s
                continue
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(timeout=left):
                _stop(child)
                results.append(PdfFacts(error=f"reading it took over {timeout_s:g} s"))
                return results
            data = os.read(child.stdout.fileno(), 65536)
            if not data:
                code = _stop(child)
                results.append(PdfFacts(error=f"the PDF reader stopped on it (exit {code})"))
                return results
            buffer += data
    _stop(child)
    return results


def _stop(child: subprocess.Popen[bytes]) -> int | None:
    if child.poll() is None:
        child.kill()
    code = child.wait()
    if child.stdout is not None:
        child.stdout.close()
    return code


def _parse(line: bytes) -> PdfFacts:
    try:
        data = json.loads(line)
        return PdfFacts(
            pages=data.get("pages"),
            encrypted=bool(data.get("encrypted")),
            opens=bool(data.get("opens")),
            error=data.get("error"),
        )
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return PdfFacts(error="the PDF reader answered nonsense")


# --- the child -------------------------------------------------------------------------------


def _child(fds: list[int]) -> None:
    """Print one JSON line per descriptor. This is the isolation boundary: whatever pypdf
    raises on a hostile file is reported as that file's error, never as a crash."""
    import logging
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    logging.disable(logging.CRITICAL)  # pypdf logs every repair it attempts
    import pypdf

    for fd in fds:
        print(json.dumps(_facts(pypdf, fd)), flush=True)


def _facts(pypdf: ModuleType, fd: int) -> dict[str, object]:
    reader_class = pypdf.PdfReader
    encrypted = opens = False
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        with os.fdopen(fd, "rb", closefd=True) as stream:
            reader = reader_class(stream, strict=False)
            encrypted = bool(reader.is_encrypted)
            if encrypted:
                opens = bool(reader.decrypt(""))
                if not opens:
                    return {"encrypted": True, "opens": False}
            return {"pages": len(reader.pages), "encrypted": encrypted, "opens": opens}
    except Exception as exc:  # the isolation boundary: every failure is this file's
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        return {
            "encrypted": encrypted,
            "opens": opens,
            "error": f"{type(exc).__name__}: {first}" if first else type(exc).__name__,
        }


if __name__ == "__main__":
    _child([int(arg) for arg in sys.argv[1:]])
