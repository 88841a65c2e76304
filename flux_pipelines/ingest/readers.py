"""Read delivered files as text chunks, whatever their format.

Every reader yields polars frames of Utf8 columns with normalised headers and a 1-based
``_row_number`` (the record's position among the file's data records, header excluded),
in bounded chunks so memory does not grow with file size. Anything that makes a whole file
unusable is raised as a ``FileProblem`` for the loader to turn into a delivery-level fatal.

This module drives every read. Below it: ``confine.py`` (opening a file inside its landing
folder), ``scanning.py`` (``FileProblem``, ``StagedText`` and the byte-level scans that
bound a file before parsing) and ``json_records.py`` (the records of JSON files).

A delivered file is opened once, confined to its agency's landing folder (``confine.py``: no
link followed, no FIFO or folder opened), and read only through that descriptor: polars gets
``/proc/self/fd/<n>`` with globbing off, so a name like ``*.csv`` or ``a[1].csv`` is a name,
never a pattern. A file that changes while it is read is rejected, not loaded in part.

The contract steers reading (``ReadOptions``, ``Contract.reading``):

- ``encoding``: a text file in another encoding (latin-1, cp1252, utf-16) is transcoded to
  UTF-8 in one streaming pass into the staging area (``scanning.StagedText``), and every reader
  reads that copy; the hash stays the delivered bytes'. Without it, a file that is not
  UTF-8 is ``delivery.bad_encoding``, whose reason says what to declare.
- ``commentPrefix``: lines starting with it before a CSV's header are skipped (polars
  ``skip_lines``); row numbers still count data records from 1 after the header. Without
  it, ``#`` comment lines before the header are detected and the file is rejected
  (``delivery.layout_mismatch``) saying what to declare, never parsed with a comment for
  a header.
- ``jsonRecordsPath``: where a .json file's records array sits in its wrapping object
  (``json_records.py``, which also reads JSON and JSON Lines: DuckDB, every field as text).

Memory is bounded per record and per field (``SizeLimits``): before a parser reads a file, a
streaming pass over its bytes (``bound_sizes``, with ``scanning.RecordScan``: 1 MiB blocks,
numpy) measures its records and fields and rejects the file whole at the first one over the limit
(``delivery.line_too_long``, ``delivery.field_too_long``), so a hostile 1 GB value costs a
bounded read instead of many times its size in memory. What each format's pass can prove:

- CSV/TXT: records and fields exactly, as delivered (quotes included): a record ends at a
  line end outside quotes, so a quoted field with embedded newlines is one field however
  many lines it spans, and an unclosed quote makes the rest of the file one record (rejected
  once it passes the limit, not read to the end).
- JSON Lines: every line is a record (JSON text holds no raw newline); values are checked as
  read, each then at most a record long.
- JSON: every element of the records array is a record (``json_records.LayoutScan``), found
  by the same kind of pass, which DuckDB then streams; a top-level object that is one
  record is bounded whole. Values are checked as read.
- JSON and JSON Lines also by depth: reading a nested value costs far more than its bytes
  (a 1.2 KB value 300 deep: 1 s and 450 MB), so the same pass counts the arrays and objects
  open outside strings (``scanning.NestingScan``) and rejects a document (a .json file, a line of
  JSON Lines) nested deeper than ``MAX_JSON_DEPTH`` as ``delivery.unreadable``.
- Parquet: compressed, so its size says nothing (a 35 KB file held a 1 GB value). The
  footer and every page header are read (never a page): a page that decompresses to more
  than its values x the field limit holds a value over it and is rejected undecoded; values
  and rows are then checked as read. A page mixing one huge value with enough small ones is
  decoded before it is rejected: memory is then bounded by that page, not by the limit.

Row counts must be plausible (``read_chunks``, and the loader for one record): a file that
holds data yet parses into zero records is rejected (``delivery.unreadable``), never loaded
as an empty delivery.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import hashlib
import io
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import polars as pl

from flux_pipelines.contracts.model import (
    MAX_FIELD_BYTES_ENV,
    MAX_LINE_BYTES_ENV,
    ReadOptions,
    SizeLimits,
)
from flux_pipelines.contracts.validator import DELIVERED_FIELDS
from flux_pipelines.errors import UnsafePath
from flux_pipelines.ingest import json_records
from flux_pipelines.ingest.confine import (
    LANDING,
    ConfinedFile,
    folder_problem,
    landing_root_of,
    open_zone,
    relative_parts,
    stat_key,
)
from flux_pipelines.ingest.json_records import JsonRecords
from flux_pipelines.ingest.manifest import COMPLETION_MARKER
from flux_pipelines.ingest.scanning import (
    CR,
    LF,
    SCAN_BLOCK,
    FileProblem,
    NestingScan,
    RecordScan,
    StagedText,
    oversize_problem,
    reject_duplicates,
    too_deep_problem,
)
from flux_pipelines.names import ROW
from flux_pipelines.slugs import normalise_header

CSV_SUFFIXES = {".csv", ".txt"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
SUPPORTED_SUFFIXES = CSV_SUFFIXES | JSONL_SUFFIXES | {".json", ".parquet"}
HASH_BLOCK = 8 * 1024 * 1024
CHUNK_TEXT_BYTES = 32 * 1024 * 1024  # delivered text per chunk (``_rows_per_chunk``)
MIN_CHUNK_ROWS = 10_000
DEFAULT_CHUNK_ROWS = 250_000
EOL_SNIFF_BYTES = 1 << 16
# A CSV header record longer than this is no header (a file of NUL bytes, a sparse file):
# rejected after reading this much, instead of reading a "line" as long as the file.
HEADER_MAX_BYTES = 1 << 20
# Encodings that need no transcoding: the readers read UTF-8 (a BOM is skipped).
UTF8_NAMES = {"utf-8", "utf-8-sig"}
# The comment lines Flux recognises before a header when the contract declares none.
UNDECLARED_COMMENT = "#"


# One background thread hashes (and proves UTF-8) while polars reads the same file:
# hashlib releases the GIL, so the sha256 pass costs almost no wall time.
_HASHER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flux-sha256")


@dataclass(frozen=True)
class FileFacts:
    """What is known about a file before its rows are read."""

    path: Path
    size_bytes: int
    format: str
    headers: tuple[str, ...]  # normalised, in delivered order
    digest: Future[str] = field(repr=False, compare=False)
    # The confined descriptor every read goes through (None: read ``path`` as given).
    handle: ConfinedFile | None = field(default=None, repr=False, compare=False)
    # A CSV's records with too few fields, counted by the size pass (``RecordScan.short``).
    short: ShortRows = field(default_factory=lambda: ShortRows(), repr=False, compare=False)
    # The record and field limits the file was checked against (values are checked as read).
    limits: SizeLimits = field(default_factory=SizeLimits, repr=False, compare=False)
    # Set to stop the hashing thread early (the file was rejected: its digest is of no use).
    stop: threading.Event | None = field(default=None, repr=False, compare=False)
    # How the contract says to read it, and what that gave: the UTF-8 copy of a text in
    # another encoding, the comment lines before a CSV header, where JSON records are.
    reading: ReadOptions = field(default_factory=ReadOptions, repr=False, compare=False)
    text: StagedText | None = field(default=None, repr=False, compare=False)
    skip_lines: int = 0
    records: JsonRecords | None = field(default=None, repr=False, compare=False)

    @property
    def single_object(self) -> bool:
        """The file is a JSON document that is one object, read as its one record."""
        return self.records is not None and self.records.single_object

    @property
    def sha256(self) -> str:
        """The file's sha256; raises the encoding FileProblem if the bytes are not UTF-8."""
        return self.digest.result()

    @property
    def source(self) -> str:
        """What readers open: the confined descriptor's path (or the staged UTF-8 copy's),
        never a pattern."""
        if self.text is not None:
            return self.text.via
        return self.handle.via if self.handle is not None else str(self.path)

    def finish(self) -> None:
        """After the last read: a file that changed meanwhile was still being written, so
        what was read is not what the agency delivered; reject it rather than load a part."""
        sha = self.sha256
        if self.handle is None:
            return
        self.raise_if_changed()
        remember_read(self.path, sha, stat_key(self.handle.stat))

    def raise_if_changed(self) -> None:
        """The rejection of a file that changed since it was opened (none if it did not)."""
        change = self.handle.changed() if self.handle is not None else None
        if change is not None:
            raise FileProblem(
                "delivery.changed_while_reading",
                f"the file changed while Flux read it ({change}): it was still being written. "
                "Deliver complete files: write under a temporary name (.part) and rename it, "
                "or add a manifest or a _SUCCESS marker once every file is written",
            )

    def close(self) -> None:
        """Close the descriptor (the hash has its own handle) and delete the staged copies;
        reads after this fail."""
        if self.handle is not None:
            self.handle.close()
        _discard(self.text, self.records)

    def abandon(self) -> None:
        """Let go of a file rejected before or after it was read: close its descriptor, stop
        the hashing thread and wait until it has closed its own handle (one block at most),
        so a rejected file holds no descriptor once the loader moves on to the next one."""
        if self.stop is not None:
            self.stop.set()
        self.close()
        _release(self.digest)


# What each file read whole and unchanged was, as (path, sha256) -> its stat key, so the
# delivery receipt written after the load says which size/mtime/inode that content had
# (``receipts.delivery_contents``; the landing sensor compares stats, never re-hashing big
# files). In-process and bounded: a miss only means the sensor loads the day once more.
_READS: OrderedDict[tuple[str, str], str] = OrderedDict()
_READS_LOCK = threading.Lock()
_READS_KEPT = 4096


def remember_read(path: Path, sha256: str, key: str) -> None:
    with _READS_LOCK:
        _READS[(str(path), sha256)] = key
        _READS.move_to_end((str(path), sha256))
        while len(_READS) > _READS_KEPT:
            _READS.popitem(last=False)


def read_stat(path: Path, sha256: str) -> str | None:
    """The stat key the file at ``path`` had when its content ``sha256`` was read whole."""
    with _READS_LOCK:
        return _READS.get((str(path), sha256))


def file_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix == ".json":
        return "json"
    if suffix == ".parquet":
        return "parquet"
    raise FileProblem(
        "delivery.unsupported_format",
        f"unsupported file type {suffix!r}; deliver one of {sorted(SUPPORTED_SUFFIXES)}",
    )


def inspect_file(
    path: Path,
    limits: SizeLimits | None = None,
    *,
    reading: ReadOptions | None = None,
    workdir: Path | None = None,
) -> FileFacts:
    """Open the file confined to its landing folder, start hashing it (and checking its
    encoding), read its header and bound its records and fields (``bound_sizes``; None:
    the limits in force, ``SizeLimits.resolve``), as the contract's ``reading`` options say
    (None: the defaults). Copies a reader needs (a transcoded text, a JSON records array)
    go to ``workdir`` (None: the system's temporary folder). ``FileFacts.close`` (or
    ``read_chunks`` reaching the end) closes it; ``FileFacts.abandon`` when it is rejected."""
    limits = limits if limits is not None else SizeLimits.resolve()
    reading = reading if reading is not None else ReadOptions()
    check_file_name(path)
    handle = open_delivered(path)
    name = display_name(path)
    stop = threading.Event()
    digest: Future[str] | None = None
    text: StagedText | None = None
    records: JsonRecords | None = None
    short = ShortRows()
    skip = 0
    try:
        fmt = file_format(path)
        size = handle.stat.st_size
        if size == 0:
            raise FileProblem("delivery.empty_file", "the file is empty (0 bytes)")
        native = fmt == "parquet" or reading.encoding in UTF8_NAMES
        reader = handle.reopen()
        digest = _HASHER.submit(
            _hash_and_check_text, reader, check_utf8=fmt != "parquet" and native, stop=stop
        )
        try:
            if not native:
                text = transcode(handle, reading.encoding, workdir=workdir, name=name)
            readable: ConfinedFile | StagedText = text if text is not None else handle
            # Sizes before a parser sees the file: polars scans a CSV with an unclosed quote
            # to its end. A CSV's header comes first (a bounded read: a file without one is
            # unreadable, whatever its size), after its comment lines.
            names: list[str] = []
            start = 0
            if fmt == "csv":
                skip, start = comment_lines(readable, reading.comment_prefix, name=name)
                names = _delivered_csv_header(readable.via, start)
            if fmt in ("csv", "jsonl"):
                scan = bound_sizes(
                    readable, fmt, limits, name=name, headers=names, start=start, line=skip + 1
                )
                if fmt == "csv" and scan is not None and scan.may_be_short():
                    scan = bound_sizes(  # fields per record, only where one may be short
                        readable, fmt, limits, name=name, start=start, line=skip + 1,
                        exact_fields=True,
                    )  # fmt: skip
                if fmt == "csv" and scan is not None:
                    records_counted, short_frame = scan.short()
                    short = ShortRows(frame=short_frame, records=records_counted)
            if fmt == "json":
                records = json_records.locate(
                    readable,
                    path=reading.json_records_path,
                    one_record=reading.json_document_record,
                    limits=limits,
                    name=name,
                    workdir=workdir,
                )
            elif fmt == "jsonl":
                records = json_records.open_lines(readable, limits=limits, name=name)
            if fmt == "parquet":  # polars refuses a name given twice in its own words
                reject_duplicates([normalise_header(n) for n in _parquet_names(handle.via)])
            headers = records.headers if records is not None else _headers(readable.via, fmt, skip)
            if not headers:
                raise FileProblem("delivery.empty_file", "the file has no columns")
            reject_duplicates(headers)
            if fmt == "parquet":  # its footer, read by polars above, says where pages are
                bound_sizes(handle, fmt, limits, name=name)
        except FileProblem:
            # A bad encoding is the root cause: report it first. Judged on the head the
            # header came from, not by waiting for the whole hash (a 50 GB file of NUL
            # bytes has no header and must not keep the hashing thread busy for minutes).
            stop.set()
            if fmt != "parquet" and native:
                _check_utf8_head(handle.head(HEADER_MAX_BYTES))
            raise
    except BaseException:
        stop.set()
        handle.close()
        _discard(text, records)
        _release(digest)
        raise
    return FileFacts(
        path=path,
        size_bytes=size,
        format=fmt,
        headers=headers,
        digest=digest,
        handle=handle,
        limits=limits,
        stop=stop,
        reading=reading,
        text=text,
        skip_lines=skip,
        records=records,
        short=short,
    )


def _discard(text: StagedText | None, records: JsonRecords | None) -> None:
    """Delete the staged copies made for reading a file."""
    if text is not None:
        text.close()
    if records is not None:
        for staged in records.staged:
            staged.close()
        records.staged.clear()


def transcode(
    handle: ConfinedFile, encoding: str, *, workdir: Path | None, name: str
) -> StagedText:
    """The delivered text in ``encoding`` (the contract's) as UTF-8, in the staging area:
    one streaming pass, ``SCAN_BLOCK`` at a time, through the confined descriptor.

    Rejected (``delivery.bad_encoding``): bytes that are not valid in ``encoding``, and a
    text that is valid UTF-8 holding multi-byte characters: read as Latin-1 it would load
    as mojibake (``CafÃ©``), and text in a single-byte encoding practically never forms
    valid UTF-8 sequences, so the declaration is what is wrong."""
    decoder = codecs.getincrementaldecoder(encoding)()
    utf8 = codecs.getincrementaldecoder("utf-8")()
    is_utf8, multibyte = True, False
    staged = StagedText(workdir, ".utf8")
    fd, size, offset = handle.fileno(), handle.stat.st_size, 0
    try:
        while offset < size and (block := os.pread(fd, min(SCAN_BLOCK, size - offset), offset)):
            try:
                staged.write(decoder.decode(block).encode("utf-8"))
            except UnicodeDecodeError as exc:
                raise FileProblem(
                    "delivery.bad_encoding",
                    f"{name} is not valid {encoding} text, the encoding its contract declares "
                    f"(byte 0x{block[exc.start]:02x} at byte offset {offset + exc.start:,}); "
                    "re-export it in that encoding, or have the contract's customProperty "
                    "encoding corrected",
                ) from exc
            if is_utf8:
                try:
                    utf8.decode(block)
                    multibyte = multibyte or not block.isascii()
                except UnicodeDecodeError:
                    is_utf8 = False
            offset += len(block)
        try:
            staged.write(decoder.decode(b"", final=True).encode("utf-8"))
        except UnicodeDecodeError as exc:
            raise FileProblem(
                "delivery.bad_encoding",
                f"{name} ends inside a character of {encoding}, the encoding its contract "
                "declares: the file is cut short or in another encoding",
            ) from exc
        if is_utf8 and multibyte and not encoding.startswith("utf"):
            raise FileProblem(
                "delivery.bad_encoding",
                f"{name} is UTF-8 text, but its contract declares encoding: {encoding}; read "
                f"as {encoding} its accented letters would load garbled. Remove customProperty "
                "encoding from the contract, or re-export the file in the declared encoding",
            )
    except BaseException:
        staged.close()
        raise
    return staged


def _release(digest: Future[str] | None) -> None:
    """Wait for a stopped hashing pass to end (it closes its handle); its outcome, an encoding
    error included, no longer matters: the file is rejected for another reason already."""
    if digest is not None:
        with contextlib.suppress(BaseException):
            digest.exception()


def open_delivered(path: Path) -> ConfinedFile:
    """The delivered file opened inside its agency's landing folder, or the FileProblem
    saying why it is not read: a link (anywhere on the way), '..', a folder, FIFO or device,
    a file gone, or one written after the delivery's _SUCCESS marker. A day folder given as
    a file (``delivered_files`` does so for a day folder that is a link) is refused too."""
    if ".." in path.parts:  # fine for `flux validate ../x.csv`, never into a landing folder
        path = Path(os.path.abspath(path))
        if {landing_root_of(path, 4), landing_root_of(path, 3)} != {path.parent}:
            raise FileProblem(
                "delivery.outside_landing",
                f"{path.name} is reached through '..'; Flux never climbs between folders",
            )
    parent = path.absolute().parent
    root = landing_root_of(path, 4)
    if root == parent:  # not a file of landing/<agency>/<dataset>/<day>/
        day_root = landing_root_of(path, 3)
        if day_root != parent:  # a day folder: refused with its own reason
            problem = folder_problem(day_root, path, zone=LANDING)
            raise FileProblem(problem.rule_id, problem.reason)
    try:
        parts = relative_parts(path, root, LANDING)
        with open_zone(root, parts[:-1], zone=LANDING) as folder:
            handle = folder.open_file(parts[-1])
            marker = folder.lstat(COMPLETION_MARKER)
    except UnsafePath as exc:
        raise FileProblem(exc.rule_id, exc.reason) from exc
    except FileNotFoundError as exc:
        raise FileProblem(
            "delivery.vanished", f"{path.name} is gone (its folder disappeared); deliver it again"
        ) from exc
    except OSError as exc:
        raise FileProblem(
            "delivery.unreadable", f"Flux cannot open {path.name}: {exc.strerror or exc}"
        ) from exc
    if (
        marker is not None
        and stat.S_ISREG(marker.st_mode)
        and handle.stat.st_mtime_ns > marker.st_mtime_ns
    ):
        handle.close()
        raise FileProblem(
            "delivery.changed_after_marker",
            f"{path.name} was written after the delivery's {COMPLETION_MARKER} marker, so it "
            f"may be incomplete; write {COMPLETION_MARKER} again once every file is complete",
        )
    return handle


def _check_utf8_head(head: bytes) -> None:
    """Raise the encoding FileProblem for bad UTF-8 in the first bytes of a file (a multi-
    byte character cut at the end of ``head`` is not an error)."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError as exc:
        raise not_utf8(head, head[exc.start], exc.start) from exc


# What a file that is not UTF-8 text most likely is, by its first bytes, and the fix.
_UTF16_FIX = "re-export it as UTF-8, or declare customProperty encoding: utf-16 in the contract"
_SIGNATURES = (
    (codecs.BOM_UTF16_LE, "UTF-16 text (it starts with a UTF-16 byte-order mark)", _UTF16_FIX),
    (codecs.BOM_UTF16_BE, "UTF-16 text (it starts with a UTF-16 byte-order mark)", _UTF16_FIX),
    (b"\x1f\x8b", "gzip-compressed data, not text", "deliver it uncompressed (a .csv of text)"),
    (b"PK\x03\x04", "a zip archive or an Excel workbook, not text", "export the data as CSV"),
    (b"PAR1", "a Parquet file, not text", "deliver it under a .parquet name"),
)


def not_utf8(first: bytes, byte: int, offset: int) -> FileProblem:
    """The rejection of a file whose bytes are not UTF-8, saying what it seems to be and
    what fixes it: re-export it, or declare its encoding in the contract (``first``: the
    file's first bytes)."""
    for signature, what, fix in _SIGNATURES:
        if first.startswith(signature):
            return FileProblem("delivery.bad_encoding", f"the file is {what}; {fix}")
    head = first[:64]
    if len(head) >= 8 and head.count(0) * 3 >= len(head):  # ASCII text in UTF-16: NUL bytes
        codec = "utf-16-le" if head[1::2].count(0) > head[0::2].count(0) else "utf-16-be"
        return FileProblem(
            "delivery.bad_encoding",
            "the file looks like UTF-16 text without a byte-order mark (every other byte is "
            f"NUL); re-export it as UTF-8, or declare customProperty encoding: {codec} in the "
            "contract",
        )
    return FileProblem(
        "delivery.bad_encoding",
        f"the file is not valid UTF-8 (byte 0x{byte:02x} at byte offset {offset:,}); "
        "re-export it as UTF-8, or declare customProperty encoding: latin-1 if the file is "
        "Latin-1 (cp1252 if it comes from Windows) in the contract",
    )


def _hash_and_check_text(
    handle: BinaryIO, *, check_utf8: bool, stop: threading.Event | None = None
) -> str:
    """One pass computes the sha256 and proves the bytes are UTF-8 (a cheap C decoder);
    ``stop`` ends it early (the file was rejected already: the digest is then meaningless)."""
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")()
    size, first = 0, b""
    with handle:
        while block := handle.read(HASH_BLOCK):
            if stop is not None and stop.is_set():
                return ""
            digest.update(block)
            first = first or block[:64]
            if check_utf8:
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as exc:
                    raise not_utf8(first, block[exc.start], size + exc.start) from exc
            size += len(block)
    if check_utf8:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise FileProblem(
                "delivery.bad_encoding", "the file ends inside a multi-byte UTF-8 character"
            ) from exc
    return digest.hexdigest()


def _csv_header(source: str, start: int = 0) -> list[str]:
    """The delivered header record as written (polars renames repeated names silently),
    from at most ``HEADER_MAX_BYTES`` from ``start`` (after the comment lines): a file
    without a line end there has no header."""
    with open(source, "rb") as handle:
        handle.seek(start)
        head = handle.read(HEADER_MAX_BYTES)
    if len(head) == HEADER_MAX_BYTES and b"\n" not in head and b"\r" not in head:
        raise csv.Error(
            f"no line end in the first {HEADER_MAX_BYTES:,} bytes: the header record is too "
            "long, or the file is not CSV text"
        )
    text = codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=False)
    return next(csv.reader(io.StringIO(text, newline="")), [])


def _delivered_csv_header(source: str, start: int = 0) -> list[str]:
    """The CSV header's normalised names as delivered (duplicates rejected), from a bounded
    read at ``start``; the FileProblem saying why there is none."""
    try:
        delivered = _csv_header(source, start)
        if any("\x00" in h for h in delivered):
            # UTF-16 without a BOM reads as ASCII and NUL bytes, valid UTF-8: say what it
            # is, rather than name columns like 'i_d' the contract does not know
            raise FileProblem(
                "delivery.bad_encoding",
                "the header holds NUL bytes, as UTF-16 text or a binary file does; re-export "
                "the file as UTF-8, or declare customProperty encoding: utf-16-le (utf-16-be) "
                "in the contract if it is UTF-16 text without a byte-order mark",
            )
        names = [normalise_header(h) for h in delivered]
    except (OSError, ValueError) as exc:
        raise FileProblem(
            "delivery.unreadable", f"the file cannot be parsed as csv: {exc}"
        ) from exc
    except csv.Error as exc:
        raise FileProblem("delivery.unreadable", f"the header cannot be parsed: {exc}") from exc
    reject_duplicates(names)
    return names


def comment_lines(
    text: ConfinedFile | StagedText, prefix: str | None, *, name: str
) -> tuple[int, int]:
    """(lines to skip, byte offset of the header) for a CSV whose header follows comment
    lines, from its first ``HEADER_MAX_BYTES``.

    With the contract's ``prefix``: the lines starting with it at the top (and blank lines
    among them) are skipped. Without one, ``#`` lines at the top are comments, and the file
    is rejected (``delivery.layout_mismatch``) saying what to declare, when they cannot be a
    header: two or more of them, a ``#`` followed by a space, ``#`` or ``!`` (``# exported
    by ...``, ``#!``), or a line after them with more fields than the first. A single line
    such as ``#,name`` or ``#id,name`` stays a header whose first column is named so.
    """
    head = text.head(HEADER_MAX_BYTES)
    skip_bom = len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0
    eol = b"\r" if _eol_char(text.via) == "\r" else b"\n"
    lines = head[skip_bom:].split(eol)[:-1]  # complete lines only
    mark = (prefix or UNDECLARED_COMMENT).encode("utf-8")
    comments: list[bytes] = []
    skip, offset = 0, skip_bom
    for line in lines:
        bare = line.rstrip(b"\r")
        if not bare.startswith(mark) and (not comments or bare.strip()):
            break
        if bare.startswith(mark):
            comments.append(bare)
        skip, offset = skip + 1, offset + len(line) + len(eol)
    if prefix is not None or not comments:
        return (skip, offset) if comments else (0, 0)
    rest = [line.rstrip(b"\r") for line in lines[skip : skip + 1]]
    follows = comments[0][1:2]
    named = len(comments) == 1 and follows not in (b"", b" ", b"\t", b"#", b"!")
    if named and (not rest or _fields(rest[0]) <= _fields(comments[0])):
        return 0, 0  # a header whose first column's name starts with '#'
    shown = comments[0][:60].decode("utf-8", "replace")
    raise FileProblem(
        "delivery.layout_mismatch",
        f"{name}: the file starts with {len(comments)} comment line(s) ({shown!r}"
        f"{'...' if len(comments[0]) > 60 else ''}); declare customProperty commentPrefix: "
        f"'{UNDECLARED_COMMENT}' in the contract (Flux then skips them before the header), or "
        "deliver the file without them",
    )


def _fields(line: bytes) -> int:
    return len(next(csv.reader([line.decode("utf-8", "replace")]), []))


def _parquet_names(source: str) -> list[str]:
    """The top-level column names a Parquet footer declares, repeats included, so a name
    given twice is ``delivery.duplicate_columns`` as in a CSV header (polars refuses such a
    file with a DuplicateError). None from a footer pyarrow cannot read: polars' verdict on
    the file (``_headers``) is then the one the agency reads, as for any broken file."""
    import pyarrow as pa  # Parquet deliveries only
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(source) as footer:  # closed now, not when collected
            return list(footer.schema_arrow.names)
    except (OSError, ValueError, pa.ArrowException):
        return []


def _headers(source: str, fmt: str, skip_lines: int = 0) -> tuple[str, ...]:
    """A CSV's or Parquet file's normalised column names as polars reads them (a CSV's
    delivered header is checked first by ``_delivered_csv_header``: polars renames repeated
    names silently; JSON keys come from ``json_records.discover``)."""
    try:
        names = _scan(source, fmt, skip_lines).collect_schema().names()
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise FileProblem(
            "delivery.unreadable", f"the file cannot be parsed as {fmt}: {exc}"
        ) from exc
    return tuple(n for n in names if n != ROW)


def _scan(source: str, fmt: str, skip_lines: int = 0) -> pl.LazyFrame:
    """A lazy text view of a CSV or Parquet file with normalised headers and the row number
    (a CSV's from 1 after its header, ``skip_lines`` comment lines before it skipped).

    ``source`` is a literal path (``glob=False`` where polars offers it; the confined
    ``/proc/self/fd/<n>`` path holds no pattern character anyway)."""
    if fmt == "csv":
        frame = pl.scan_csv(
            source,
            glob=False,
            eol_char=_eol_char(source),
            infer_schema=False,
            with_column_names=lambda cols: [normalise_header(c) for c in cols],
            raise_if_empty=False,
            encoding="utf8",
            skip_lines=skip_lines,
        )
    else:
        frame = pl.scan_parquet(source, glob=False)
    if fmt != "csv":
        delivered = frame.collect_schema().names()
        reject_duplicates([normalise_header(c) for c in delivered])
        frame = frame.rename({c: normalise_header(c) for c in delivered})
        frame = frame.with_columns(
            _as_text(name, dtype) for name, dtype in frame.collect_schema().items()
        )
    return frame.with_row_index(ROW, offset=1).with_columns(pl.col(ROW).cast(pl.Int64))


def _eol_char(source: str) -> str:
    """'\\r' for files with classic Mac line ends (no '\\n' at all; Treasury's tas_list.csv).

    polars splits lines on one character only; read with '\\n', such a file is one huge
    header line. CRLF files end in '\\n' and read fine either way.
    """
    with open(source, "rb") as handle:
        head = handle.read(EOL_SNIFF_BYTES)
    return "\r" if b"\r" in head and b"\n" not in head else "\n"


def _as_text(name: str, dtype: pl.DataType) -> pl.Expr:
    """Typed formats are kept 'as delivered' as text; nested values become JSON text."""
    column = pl.col(name)
    if isinstance(dtype, (pl.Struct, pl.List, pl.Array)):
        return _json_text(column).alias(name)
    return column.cast(pl.String)


_WRAPPED = '{"v":'


def _json_text(column: pl.Expr) -> pl.Expr:
    """A nested value's JSON text by polars' own encoder (compact, as DuckDB gives a JSON
    file's nested values): the value wrapped in a one-field struct, encoded, unwrapped.
    Python's ``json.dumps`` per value took 17 s for 74k values 16 deep; this takes 0.1 s.
    A NaN or infinity inside a nested value becomes ``null``, as JSON has no such number."""
    encoded = pl.struct(column.alias("v")).struct.json_encode()
    text = encoded.str.strip_prefix(_WRAPPED).str.strip_suffix("}")
    return pl.when(column.is_null()).then(None).otherwise(text)


def read_chunks(facts: FileFacts, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[pl.DataFrame]:
    """Yield the file's rows as text frames of at most ``chunk_rows`` rows; after the last,
    find the CSV records short of fields (``FileFacts.short``), reject a file that holds
    data but gave no record (``holds_data``), reject the file if it changed while it was
    read (``FileFacts.finish``), and close it."""
    chunk_rows = _rows_per_chunk(facts, chunk_rows)
    rows, padded = 0, False
    try:
        try:
            if facts.records is not None:
                chunks = json_records.read_batches(facts.records, chunk_rows)
            else:
                scan = _scan(facts.source, facts.format, facts.skip_lines)
                chunks = scan.collect_batches(chunk_size=chunk_rows)
            for chunk in chunks:
                if chunk.height:
                    if facts.format != "csv":  # CSV fields were measured exactly, unparsed
                        check_values(chunk, facts)
                    rows += chunk.height
                    padded = padded or _may_be_short(chunk, facts)
                    yield chunk
            if padded:  # polars padded a record: its count must be the size pass's
                check_record_count(facts, rows)
            if rows == 0 and holds_data(facts):
                raise FileProblem(
                    "delivery.unreadable",
                    f"{display_name(facts.path)}: {facts.size_bytes:,} bytes holding data "
                    f"parsed into zero records as {facts.format}: Flux never loads such a "
                    "file as an empty delivery; check its layout (the header, the line ends, "
                    "the records' place in a JSON document)",
                )
        except (pl.exceptions.PolarsError, OSError) as exc:
            _ = facts.sha256  # a bad encoding is the root cause: report it first
            raise FileProblem(
                "delivery.unreadable",
                f"the file cannot be parsed as {facts.format}: {_first_line(exc)}; "
                "check quoting and the number of fields per line",
            ) from exc
        except FileProblem:
            _ = facts.sha256  # likewise
            raise
        facts.finish()
    except FileProblem:
        facts.raise_if_changed()  # a file still being written is the root cause
        raise
    finally:
        facts.close()


def holds_data(facts: FileFacts) -> bool:
    """Whether a file that gave no record holds some: a CSV with anything but blank lines
    after its header line, a JSON Lines file with anything but blank lines, a JSON array the
    layout pass counted elements in, a Parquet file whose footer counts rows. Called only
    when no record was read, before the file is closed."""
    if facts.format == "parquet":
        import pyarrow.parquet as pq

        with pq.ParquetFile(facts.source) as footer:
            return bool(footer.metadata.num_rows > 0)
    if facts.format == "json":
        return facts.records is not None and facts.records.records > 0
    eol = _eol_char(facts.source).encode()
    # a CSV's comment lines and header line are no data
    lines = facts.skip_lines + 1 if facts.format == "csv" else 0
    with open(facts.source, "rb") as handle:
        while block := handle.read(SCAN_BLOCK):
            while lines and block:
                cut = block.find(eol)
                block = block[cut + 1 :] if cut >= 0 else b""
                lines -= cut >= 0
            if block.strip(b" \t\r\n"):
                return True
    return False


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


# -- record and field sizes ---------------------------------------------------------------------

# A Parquet value takes its bytes plus at most this much of its page (a 4-byte length and its
# definition/repetition levels): a page decompressing to more than values x (limit + this)
# bytes holds at least one value over the limit, whatever the writer.
PARQUET_VALUE_OVERHEAD = 16


def bound_sizes(
    handle: ConfinedFile | StagedText,
    fmt: str,
    limits: SizeLimits,
    *,
    name: str,
    headers: Sequence[str] = (),
    start: int = 0,
    line: int = 1,
    exact_fields: bool = False,
) -> RecordScan | None:
    """Reject a CSV, JSON Lines or Parquet file (``delivery.line_too_long`` /
    ``delivery.field_too_long``) at its first record or field over ``limits``, and a JSON
    Lines file (``delivery.unreadable``) at its first line nested deeper than
    ``MAX_JSON_DEPTH``, before any parser holds it (a .json document: ``json_records``);
    see the module docstring for what each format's pass proves. Reads the file once in
    ``SCAN_BLOCK`` blocks through its descriptor (no offset moved) from ``start`` (a CSV's
    header, after its comment lines: ``line`` is its line number) and stops at the first
    fault, so a 50 GB line costs one block past the limit, never the whole line. Returns the
    scan, which also counted each CSV record's fields (``RecordScan.short``)."""
    if fmt == "parquet":
        _bound_parquet(handle, limits, name=name)
        return None
    eol = LF if fmt == "jsonl" or _eol_char(handle.via) == "\n" else CR
    records = RecordScan(
        limits, eol=eol, csv=fmt == "csv", start=start, line=line, exact_fields=exact_fields
    )
    nesting = NestingScan(lines=True) if fmt == "jsonl" else None
    fd, size, offset = handle.fileno(), handle.stat.st_size, start
    while offset < size and (block := os.pread(fd, min(SCAN_BLOCK, size - offset), offset)):
        found = records.feed(block)
        if found is not None:
            raise oversize_problem(found, fmt=fmt, name=name, headers=headers, limits=limits)
        deep = nesting.feed(block) if nesting is not None else None
        if deep is not None:
            raise too_deep_problem(deep, fmt=fmt, name=name)
        offset += len(block)
    return records


def check_values(chunk: pl.DataFrame, facts: FileFacts) -> None:
    """JSON, JSON Lines and Parquet values as read (text; nested values as JSON): reject the
    file at the first over the field limit and, for Parquet, the first row over the record
    limit. Their records were bounded before parsing, so this never sees a value larger
    than one record (Parquet: one page)."""
    columns = [c for c in chunk.columns if c != ROW]
    if not columns:
        return
    limits = facts.limits
    sizes = chunk.select(
        pl.col(ROW), *[pl.col(c).str.len_bytes().fill_null(0).cast(pl.Int64) for c in columns]
    )
    unit = "row" if facts.format == "parquet" else "record"
    widest = sizes.select(pl.max_horizontal(columns)).to_series()
    if (widest > limits.max_field_bytes).any():
        row = sizes.row(int((widest > limits.max_field_bytes).arg_true()[0]), named=True)
        column = max(columns, key=lambda c: row[c])
        raise FileProblem(
            "delivery.field_too_long",
            f"{display_name(facts.path)}: field {column} of {unit} {row[ROW]} is "
            f"{row[column]:,} bytes, more than the limit of {limits.max_field_bytes:,} bytes "
            "per field; a larger limit is the Flux operator's setting "
            f"({MAX_FIELD_BYTES_ENV})",
        )
    if facts.format != "parquet":  # JSON records were bounded as delivered, before parsing
        return
    total = sizes.select(pl.sum_horizontal(columns)).to_series()
    if (total > limits.max_line_bytes).any():
        row = sizes.row(int((total > limits.max_line_bytes).arg_true()[0]), named=True)
        raise FileProblem(
            "delivery.line_too_long",
            f"{display_name(facts.path)}: {unit} {row[ROW]} is "
            f"{sum(row[c] for c in columns):,} bytes as text, more than the limit of "
            f"{limits.max_line_bytes:,} bytes per record; a larger limit is the Flux "
            f"operator's setting ({MAX_LINE_BYTES_ENV})",
        )


# -- Parquet page headers (read, never the pages) ------------------------------------------


def _bound_parquet(handle: ConfinedFile | StagedText, limits: SizeLimits, *, name: str) -> None:
    """Every page's declared sizes against the field limit, from the footer and the page
    headers only (Thrift, a few hundred bytes each); no page is read or decompressed."""
    import pyarrow as pa  # Parquet deliveries only
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(handle.via).metadata
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise FileProblem(
            "delivery.unreadable", f"the file cannot be parsed as parquet: {_first_line(exc)}"
        ) from exc
    fd, size = handle.fileno(), handle.stat.st_size
    per_value = limits.max_field_bytes + PARQUET_VALUE_OVERHEAD
    for group_index in range(meta.num_row_groups):
        group = meta.row_group(group_index)
        for column_index in range(group.num_columns):
            column = group.column(column_index)
            start = column.data_page_offset
            if column.has_dictionary_page and column.dictionary_page_offset:
                start = min(start, column.dictionary_page_offset)
            end = start + column.total_compressed_size
            where = f"column {column.path_in_schema} of row group {group_index + 1}"
            if not 0 <= start <= end <= size:
                raise _bad_parquet(name, f"{where} lies outside the file")
            offset, pages = start, 0
            while offset < end:
                page = _page_header(fd, offset, end, name=name, where=where)
                values = max(page.values, 1)
                if page.uncompressed > values * per_value:
                    raise FileProblem(
                        "delivery.field_too_long",
                        f"{name}: {where}: a page holds {page.values:,} value(s) in "
                        f"{page.uncompressed:,} bytes once decompressed, so at least one value "
                        f"is longer than the limit of {limits.max_field_bytes:,} bytes per "
                        "field; Flux rejects the file without decompressing it (a larger "
                        f"limit is the Flux operator's setting, {MAX_FIELD_BYTES_ENV})",
                    )
                offset += page.header_bytes + page.compressed
                pages += 1
                if pages > column.num_values + 1:
                    raise _bad_parquet(name, f"{where} has more pages than values")


@dataclass(frozen=True)
class _Page:
    header_bytes: int
    uncompressed: int
    compressed: int
    values: int


def _page_header(fd: int, offset: int, end: int, *, name: str, where: str) -> _Page:
    """The page header at ``offset``: read 4 KB, more (up to ``HEADER_MAX_BYTES``) only for a
    header carrying long statistics."""
    want = 4096
    while True:
        buffer = os.pread(fd, min(want, end - offset), offset)
        reader = _Thrift(buffer)
        try:
            fields = reader.page_header()
        except _Truncated:
            if want >= HEADER_MAX_BYTES or len(buffer) < want:
                raise _bad_parquet(name, f"a page header of {where} is cut or too long") from None
            want *= 16
            continue
        except _Malformed as exc:
            raise _bad_parquet(name, f"a page header of {where} is malformed ({exc})") from None
        uncompressed, compressed = fields.get(2, -1), fields.get(3, -1)
        if uncompressed < 0 or compressed < 0 or offset + reader.pos + compressed > end:
            raise _bad_parquet(name, f"a page header of {where} gives impossible sizes")
        return _Page(reader.pos, uncompressed, compressed, max(fields.get(0, 0), 0))


def _bad_parquet(name: str, what: str) -> FileProblem:
    return FileProblem("delivery.unreadable", f"{name} cannot be parsed as parquet: {what}")


class _Truncated(Exception):
    """The buffer ended inside the header: read more."""


class _Malformed(Exception):
    """Not a Thrift compact page header."""


class _Thrift:
    """Just enough of Thrift's compact protocol to read a Parquet ``PageHeader``: its type (1),
    uncompressed (2) and compressed (3) sizes, and the value count (field 1 of the data,
    dictionary or v2 data page header: 5, 7, 8), skipping everything else."""

    def __init__(self, buffer: bytes) -> None:
        self.buffer = buffer
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.buffer):
            raise _Truncated
        self.pos += 1
        return self.buffer[self.pos - 1]

    def skip_bytes(self, n: int) -> None:
        if n < 0:
            raise _Malformed("negative length")
        if self.pos + n > len(self.buffer):
            raise _Truncated
        self.pos += n

    def varint(self) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise _Malformed("varint too long")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def page_header(self) -> dict[int, int]:
        """Field id -> value for fields 1-3; key 0 holds the value count."""
        found: dict[int, int] = {}
        for fid, kind in self.fields():
            if fid in (1, 2, 3) and kind == 5:
                found[fid] = self.zigzag()
            elif fid in (5, 7, 8) and kind == 12:
                for inner, inner_kind in self.fields():
                    if inner == 1 and inner_kind == 5:
                        found[0] = self.zigzag()
                    else:
                        self.skip(inner_kind, 1)
            else:
                self.skip(kind, 0)
        return found

    def fields(self) -> Iterator[tuple[int, int]]:
        """The (field id, type) of a struct's fields, up to its stop byte; the caller reads
        or skips each value before asking for the next."""
        fid = 0
        while True:
            header = self.byte()
            if header == 0:
                return
            delta, kind = header >> 4, header & 0x0F
            fid = fid + delta if delta else self.zigzag()
            yield fid, kind

    def skip(self, kind: int, depth: int) -> None:
        if depth > 32:
            raise _Malformed("nested too deep")
        if kind in (1, 2):  # booleans live in the type nibble
            return
        if kind == 3:
            self.skip_bytes(1)
        elif kind in (4, 5, 6):
            self.varint()
        elif kind == 7:
            self.skip_bytes(8)
        elif kind == 8:
            self.skip_bytes(self.varint())
        elif kind in (9, 10):
            header = self.byte()
            count, element = header >> 4, header & 0x0F
            if count == 15:
                count = self.varint()
            for _ in range(count):
                self.skip(element, depth + 1)
        elif kind == 11:
            count = self.varint()
            if count:
                types = self.byte()
                for _ in range(count):
                    self.skip(types >> 4, depth + 1)
                    self.skip(types & 0x0F, depth + 1)
        elif kind == 12:
            for _, inner in self.fields():
                self.skip(inner, depth + 1)
        else:
            raise _Malformed(f"unknown type {kind}")


# -- file names ---------------------------------------------------------------------------------


NOT_UTF8_MARK = " (name not UTF-8)"


def display_name(path: Path) -> str:
    """The file's name as text for logs, tables and reports: bytes that are not UTF-8
    (a name is bytes on POSIX) shown as ``\\xNN`` instead of breaking every writer, and
    marked, so it never reads like the valid name of another file in the delivery
    (``bad\\xff.csv`` may be one): the load keys a file's rows by this name."""
    name = Path(path).name
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        return shown + NOT_UTF8_MARK
    return name


def check_file_name(path: Path) -> None:
    """Reject a file whose name is not UTF-8: no table, report or UI can carry it as text."""
    try:
        Path(path).name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise FileProblem(
            "delivery.bad_encoding",
            f"the file name '{display_name(path)}' is not valid UTF-8; rename the file with "
            "a UTF-8 name and deliver it again",
        ) from exc


# -- short CSV records --------------------------------------------------------------------------


@dataclass
class ShortRows:
    """A file's CSV records with fewer fields than its header (None: none, or not CSV)."""

    frame: pl.DataFrame | None = None  # ROW, DELIVERED_FIELDS, EXPECTED_FIELDS
    records: int | None = None  # data records the size pass delimited (None: not CSV)


def mark_short_rows(chunk: pl.DataFrame, facts: FileFacts, needed: int) -> pl.DataFrame:
    """The chunk with ``DELIVERED_FIELDS`` and ``EXPECTED_FIELDS`` (null where the record
    is complete) when records of the file stop before field ``needed`` (the last one the
    contract reads), for the validator's ``row.short``. A record missing only trailing
    fields the contract does not know has all its contract values: raw keeps it as is."""
    short = facts.short.frame
    if short is None:
        return chunk
    short = short.filter(pl.col(DELIVERED_FIELDS) < needed)
    if short.height == 0:
        return chunk
    return chunk.join(short, on=ROW, how="left", maintain_order="left")


def _may_be_short(chunk: pl.DataFrame, facts: FileFacts) -> bool:
    """polars pads a short CSV record with nulls, so only a null last field can be one."""
    return facts.format == "csv" and chunk.get_column(facts.headers[-1]).has_nulls()


def _rows_per_chunk(facts: FileFacts, chunk_rows: int) -> int:
    """At most ``chunk_rows``, fewer for wide records: a chunk holds about
    ``CHUNK_TEXT_BYTES`` of delivered text, so memory follows the bytes read, not the rows
    (a 64-column file in 250k-row chunks peaked at 1.5 GB)."""
    records = facts.short.records
    if not records:
        return chunk_rows
    per_record = max(1, facts.size_bytes // records)
    return min(chunk_rows, max(MIN_CHUNK_ROWS, CHUNK_TEXT_BYTES // per_record))


def check_record_count(facts: FileFacts, rows: int) -> None:
    """polars cannot tell ``1,a`` (a field missing) from ``1,a,`` (an empty field): both
    read as null, so short records are counted on the bytes by the size pass, which must
    have delimited as many records as polars read, or the file's record boundaries are
    ambiguous and it is rejected rather than loaded on a guess."""
    counted = facts.short.records
    if counted is not None and counted != rows:
        raise FileProblem(
            "delivery.unreadable",
            f"{rows} records parsed but {counted} delimited by the line ends and quotes: the "
            "record boundaries are ambiguous; check for unbalanced quotes",
        )
