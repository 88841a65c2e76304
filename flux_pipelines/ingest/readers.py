"""Read delivered files as text chunks, whatever their format.

Every reader yields polars frames of Utf8 columns with normalised headers and a 1-based
``_row_number`` (the record's position among the file's data records, header excluded),
in bounded chunks so memory does not grow with file size. Anything that makes a whole file
unusable is raised as a ``FileProblem`` for the loader to turn into a delivery-level fatal.

A delivered file is opened once, confined to its agency's landing folder (``confine.py``: no
link followed, no FIFO or folder opened), and read only through that descriptor: polars gets
``/proc/self/fd/<n>`` with globbing off, so a name like ``*.csv`` or ``a[1].csv`` is a name,
never a pattern. A file that changes while it is read is rejected, not loaded in part.

Memory is bounded per record and per field (``SizeLimits``): before polars parses a file, a
streaming pass over its bytes (``bound_sizes``: 1 MiB blocks, numpy) measures its records
and fields and rejects the file whole at the first one over the limit
(``delivery.line_too_long``, ``delivery.field_too_long``), so a hostile 1 GB value costs a
bounded read instead of many times its size in memory. What each format's pass can prove:

- CSV/TXT: records and fields exactly, as delivered (quotes included): a record ends at a
  line end outside quotes, so a quoted field with embedded newlines is one field however
  many lines it spans, and an unclosed quote makes the rest of the file one record (rejected
  once it passes the limit, not read to the end).
- JSON Lines: every line is a record (JSON text holds no raw newline); values are checked as
  read, each then at most a record long.
- JSON: the document is parsed whole, so it is one record: a file larger than the record
  limit is rejected unparsed (JSON Lines is the format for big deliveries); values are
  checked as read.
- JSON and JSON Lines also by depth: reading a nested value costs far more than its bytes
  (a 1.2 KB value 300 deep: 1 s and 450 MB), so the same pass counts the arrays and objects
  open outside strings (``NestingScan``) and rejects a document (a .json file, a line of
  JSON Lines) nested deeper than ``MAX_JSON_DEPTH`` as ``delivery.unreadable``.
- Parquet: compressed, so its size says nothing (a 35 KB file held a 1 GB value). The
  footer and every page header are read (never a page): a page that decompresses to more
  than its values x the field limit holds a value over it and is rejected undecoded; values
  and rows are then checked as read. A page mixing one huge value with enough small ones is
  decoded before it is rejected: memory is then bounded by that page, not by the limit.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import hashlib
import io
import json
import os
import re
import stat
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import polars as pl

from flux_pipelines.contracts.model import MAX_FIELD_BYTES_ENV, MAX_LINE_BYTES_ENV, SizeLimits
from flux_pipelines.contracts.slugs import normalise_header
from flux_pipelines.contracts.validator import DELIVERED_FIELDS, EXPECTED_FIELDS, ROW
from flux_pipelines.errors import UnsafePath
from flux_pipelines.ingest.confine import (
    LANDING,
    ConfinedFile,
    folder_problem,
    landing_root_of,
    open_zone,
    relative_parts,
    stat_key,
)
from flux_pipelines.ingest.manifest import COMPLETION_MARKER

CSV_SUFFIXES = {".csv", ".txt"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
SUPPORTED_SUFFIXES = CSV_SUFFIXES | JSONL_SUFFIXES | {".json", ".parquet"}
HASH_BLOCK = 8 * 1024 * 1024
DEFAULT_CHUNK_ROWS = 250_000
EOL_SNIFF_BYTES = 1 << 16
# A CSV header record longer than this is no header (a file of NUL bytes, a sparse file):
# rejected after reading this much, instead of reading a "line" as long as the file.
HEADER_MAX_BYTES = 1 << 20
# The size pass reads this much at a time. Its vectors hold up to 8 bytes per byte read (a
# block of nothing but commas), so 1 MiB keeps it under ~25 MB, and it is as fast as 8 MiB
# (55 ms for 79 MB, measured; 8 MiB blocks: 66 ms, 190 MB on that worst case).
SCAN_BLOCK = 1 << 20


class FileProblem(Exception):
    """A whole file cannot be read; carries the rule id and an actionable reason."""

    def __init__(self, rule_id: str, reason: str) -> None:
        super().__init__(reason)
        self.rule_id = rule_id
        self.reason = reason


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
    # Filled by ``read_chunks`` once the file is read: its CSV records with too few fields.
    short: ShortRows = field(default_factory=lambda: ShortRows(), repr=False, compare=False)
    # The record and field limits the file was checked against (values are checked as read).
    limits: SizeLimits = field(default_factory=SizeLimits, repr=False, compare=False)
    # Set to stop the hashing thread early (the file was rejected: its digest is of no use).
    stop: threading.Event | None = field(default=None, repr=False, compare=False)

    @property
    def sha256(self) -> str:
        """The file's sha256; raises the encoding FileProblem if the bytes are not UTF-8."""
        return self.digest.result()

    @property
    def source(self) -> str:
        """What readers open: the confined descriptor's path, never a pattern."""
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
        """Close the descriptor (the hash has its own handle); reads after this fail."""
        if self.handle is not None:
            self.handle.close()

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


def inspect_file(path: Path, limits: SizeLimits | None = None) -> FileFacts:
    """Open the file confined to its landing folder, start hashing it (and checking its
    encoding), read its header and bound its records and fields (``bound_sizes``; None:
    the limits in force, ``SizeLimits.resolve``). ``FileFacts.close`` (or ``read_chunks``
    reaching the end) closes it; ``FileFacts.abandon`` when it is rejected."""
    limits = limits if limits is not None else SizeLimits.resolve()
    check_file_name(path)
    handle = open_delivered(path)
    stop = threading.Event()
    digest: Future[str] | None = None
    try:
        fmt = file_format(path)
        size = handle.stat.st_size
        if size == 0:
            raise FileProblem("delivery.empty_file", "the file is empty (0 bytes)")
        reader = handle.reopen()
        digest = _HASHER.submit(
            _hash_and_check_text, reader, check_utf8=fmt != "parquet", stop=stop
        )
        try:
            # Sizes before polars sees the file: it reads JSON whole to learn its columns, and
            # scans a CSV with an unclosed quote to its end. A CSV's header comes first (a
            # bounded read: a file without one is unreadable, whatever its size).
            names = _delivered_csv_header(handle.via) if fmt == "csv" else []
            if fmt != "parquet":
                bound_sizes(handle, fmt, limits, name=display_name(path), headers=names)
            if fmt in ("json", "jsonl"):
                _reject_doubled_keys(handle.via, fmt)
            if fmt == "parquet":  # polars refuses a name given twice in its own words
                _reject_duplicates([normalise_header(n) for n in _parquet_names(handle.via)])
            headers = _headers(handle.via, fmt)
            if not headers:
                raise FileProblem("delivery.empty_file", "the file has no columns")
            _reject_duplicates(headers)
            if fmt == "parquet":  # its footer, read by polars above, says where pages are
                bound_sizes(handle, fmt, limits, name=display_name(path))
        except FileProblem:
            # A bad encoding is the root cause: report it first. Judged on the head the
            # header came from, not by waiting for the whole hash (a 50 GB file of NUL
            # bytes has no header and must not keep the hashing thread busy for minutes).
            stop.set()
            if fmt != "parquet":
                _check_utf8_head(handle.head(HEADER_MAX_BYTES))
            raise
    except BaseException:
        stop.set()
        handle.close()
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
    )


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
        raise FileProblem(
            "delivery.bad_encoding",
            f"the file is not valid UTF-8 (byte 0x{head[exc.start]:02x} at byte offset "
            f"{exc.start}); re-export it as UTF-8",
        ) from exc


def _hash_and_check_text(
    handle: BinaryIO, *, check_utf8: bool, stop: threading.Event | None = None
) -> str:
    """One pass computes the sha256 and proves the bytes are UTF-8 (a cheap C decoder);
    ``stop`` ends it early (the file was rejected already: the digest is then meaningless)."""
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")()
    size = 0
    with handle:
        while block := handle.read(HASH_BLOCK):
            if stop is not None and stop.is_set():
                return ""
            digest.update(block)
            if check_utf8:
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as exc:
                    raise FileProblem(
                        "delivery.bad_encoding",
                        f"the file is not valid UTF-8 (byte 0x{block[exc.start]:02x} at byte "
                        f"offset {size + exc.start}); re-export it as UTF-8",
                    ) from exc
            size += len(block)
    if check_utf8:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise FileProblem(
                "delivery.bad_encoding", "the file ends inside a multi-byte UTF-8 character"
            ) from exc
    return digest.hexdigest()


def _reject_duplicates(headers: Sequence[str]) -> None:
    duplicates = sorted(h for h, n in Counter(headers).items() if n > 1)
    if duplicates:
        raise FileProblem(
            "delivery.duplicate_columns",
            f"columns {duplicates} appear more than once (after normalising header spelling)",
        )


def _csv_header(source: str) -> list[str]:
    """The delivered header record as written (polars renames repeated names silently),
    from at most ``HEADER_MAX_BYTES``: a file without a line end there has no header."""
    with open(source, "rb") as handle:
        head = handle.read(HEADER_MAX_BYTES)
    if len(head) == HEADER_MAX_BYTES and b"\n" not in head and b"\r" not in head:
        raise csv.Error(
            f"no line end in the first {HEADER_MAX_BYTES:,} bytes: the header record is too "
            "long, or the file is not CSV text"
        )
    text = codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=False)
    return next(csv.reader(io.StringIO(text, newline="")), [])


def _delivered_csv_header(source: str) -> list[str]:
    """The CSV header's normalised names as delivered (duplicates rejected), from a bounded
    read; the FileProblem saying why there is none."""
    try:
        delivered = _csv_header(source)
        if any("\x00" in h for h in delivered):
            # UTF-16 without a BOM reads as ASCII and NUL bytes, valid UTF-8: say what it
            # is, rather than name columns like 'i_d' the contract does not know
            raise FileProblem(
                "delivery.bad_encoding",
                "the header holds NUL bytes, as UTF-16 text or a binary file does; re-export "
                "the file as UTF-8",
            )
        names = [normalise_header(h) for h in delivered]
    except (OSError, ValueError) as exc:
        raise FileProblem(
            "delivery.unreadable", f"the file cannot be parsed as csv: {exc}"
        ) from exc
    except csv.Error as exc:
        raise FileProblem("delivery.unreadable", f"the header cannot be parsed: {exc}") from exc
    _reject_duplicates(names)
    return names


_DOUBLED_KEY = re.compile(r'(?:in line|in record/value) (\d+): .*has duplicate key "(.*)"')


def _reject_doubled_keys(source: str, fmt: str) -> None:
    """An object holding a key twice (at any depth) rejects the file, as a CSV header given
    twice does: polars keeps the first value and drops the other without a word.

    DuckDB's JSON reader refuses such an object while it turns every row into JSON text (a
    pass of ~0.4 s per 1M lines here, after ``bound_sizes`` bounded every record); any other
    complaint of DuckDB's is left to the polars reader, whose verdicts the rules are.
    """
    import duckdb  # step code: the definitions never import DuckDB

    form = "newline_delimited" if fmt == "jsonl" else "auto"
    try:
        with duckdb.connect() as conn:
            conn.execute(
                "SELECT count(*) FROM read_json(?, format = ?, records = true) t "
                "WHERE to_json(t) IS NULL",
                [source, form],
            ).fetchall()
    except duckdb.Error as exc:
        found = _DOUBLED_KEY.search(str(exc))
        if found is None:
            return
        unit = "line" if fmt == "jsonl" else "record"
        raise FileProblem(
            "delivery.duplicate_columns",
            f"{unit} {found.group(1)} has the key {found.group(2)[:100]!r} twice; which value "
            "to load would be a guess: deliver each key once per object",
        ) from exc


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


def _headers(source: str, fmt: str) -> tuple[str, ...]:
    """The file's normalised column names as polars reads them (a CSV's delivered header is
    checked first by ``_delivered_csv_header``: polars renames repeated names silently)."""
    try:
        names = _scan(source, fmt).collect_schema().names()
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise FileProblem(
            "delivery.unreadable", f"the file cannot be parsed as {fmt}: {exc}"
        ) from exc
    return tuple(n for n in names if n != ROW)


def _scan(source: str, fmt: str) -> pl.LazyFrame:
    """A lazy text view of the file with normalised headers and the row number.

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
        )
    elif fmt == "jsonl":
        frame = pl.scan_ndjson(source, infer_schema_length=None)
    elif fmt == "json":
        frame = pl.read_json(source).lazy()
    else:
        frame = pl.scan_parquet(source, glob=False)
    if fmt != "csv":
        delivered = frame.collect_schema().names()
        _reject_duplicates([normalise_header(c) for c in delivered])
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
    """Typed formats are kept 'as delivered' as text; nested values become JSON."""
    column = pl.col(name)
    if isinstance(dtype, (pl.Struct, pl.List, pl.Array)):
        return column.map_batches(_json_text, return_dtype=pl.String).alias(name)
    return column.cast(pl.String)


def _json_text(series: pl.Series) -> pl.Series:
    return pl.Series(
        [None if v is None else json.dumps(v, default=str) for v in series.to_list()],
        dtype=pl.String,
    )


def read_chunks(facts: FileFacts, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[pl.DataFrame]:
    """Yield the file's rows as text frames of at most ``chunk_rows`` rows; after the last,
    find the CSV records short of fields (``FileFacts.short``), reject the file if it
    changed while it was read (``FileFacts.finish``), and close it."""
    rows, padded = 0, False
    try:
        try:
            for chunk in _scan(facts.source, facts.format).collect_batches(chunk_size=chunk_rows):
                if chunk.height:
                    if facts.format != "csv":  # CSV fields were measured exactly, unparsed
                        check_values(chunk, facts)
                    rows += chunk.height
                    padded = padded or _may_be_short(chunk, facts)
                    yield chunk
            if padded:
                facts.short.frame = short_rows(facts, rows)
        except (pl.exceptions.PolarsError, OSError) as exc:
            _ = facts.sha256  # a bad encoding is the root cause: report it first
            raise FileProblem(
                "delivery.unreadable",
                f"the file cannot be parsed as {facts.format}: {_first_line(exc)}; "
                "check quoting and the number of fields per line",
            ) from exc
        facts.finish()
    except FileProblem:
        facts.raise_if_changed()  # a file still being written is the root cause
        raise
    finally:
        facts.close()


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


# -- record and field sizes ---------------------------------------------------------------------

_QUOTE, _COMMA, _LF, _CR = ord('"'), ord(","), ord("\n"), ord("\r")
_BACKSLASH = ord("\\")
# '[' and '{' (0x5B, 0x7B) both read 0x7B with bit 0x20 set, ']' and '}' both 0x7D: two
# comparisons find every bracket (a 256-entry lookup table is ~8x slower in numpy).
_FOLD, _OPENS, _CLOSES = 0x20, ord("{"), ord("}")
_NONE = np.empty(0, dtype=np.intp)
# How deep a JSON document (a .json file, or one line of JSON Lines) may nest arrays and
# objects, counting its outermost one. Reading a nested value costs far more than its size
# (polars types it level by level, then it is turned into JSON text): a 1.2 KB value 300 deep
# took 1 s and 450 MB, and 8 MiB of values 32 deep took 50 s (64 deep: 310 s). A table's
# values need a few levels: [ {record} ] plus an object or list in a cell is 3 or 4.
MAX_JSON_DEPTH = 16
# A Parquet value takes its bytes plus at most this much of its page (a 4-byte length and its
# definition/repetition levels): a page decompressing to more than values x (limit + this)
# bytes holds at least one value over the limit, whatever the writer.
PARQUET_VALUE_OVERHEAD = 16


def bound_sizes(
    handle: ConfinedFile,
    fmt: str,
    limits: SizeLimits,
    *,
    name: str,
    headers: Sequence[str] = (),
) -> None:
    """Reject the file (``delivery.line_too_long`` / ``delivery.field_too_long``) at its first
    record or field over ``limits``, and a JSON or JSON Lines file (``delivery.unreadable``)
    at its first document nested deeper than ``MAX_JSON_DEPTH``, before any parser holds it;
    see the module docstring for what each format's pass proves. Reads the file once in
    ``SCAN_BLOCK`` blocks through the confined descriptor (no offset moved) and stops at the
    first fault, so a 50 GB line costs one block past the limit, never the whole line."""
    if fmt == "json" and handle.stat.st_size > limits.max_line_bytes:
        raise FileProblem(
            "delivery.line_too_long",
            f"{name}: the JSON document is {handle.stat.st_size:,} bytes, more than the "
            f"limit of {limits.max_line_bytes:,} bytes per record; a .json file is parsed "
            "whole, as one record, so deliver a file this large as JSON Lines (.jsonl, one "
            f"record per line) or ask the Flux operator to raise {MAX_LINE_BYTES_ENV}",
        )
    if fmt == "parquet":
        _bound_parquet(handle, limits, name=name)
        return
    records = None  # a .json file is one record, bounded by its size above
    if fmt != "json":
        eol = _LF if fmt == "jsonl" or _eol_char(handle.via) == "\n" else _CR
        records = RecordScan(limits, eol=eol, csv=fmt == "csv")
    nesting = NestingScan(lines=fmt == "jsonl") if fmt in ("json", "jsonl") else None
    fd, size, offset = handle.fileno(), handle.stat.st_size, 0
    while offset < size and (block := os.pread(fd, min(SCAN_BLOCK, size - offset), offset)):
        found = records.feed(block) if records is not None else None
        if found is not None:
            raise _oversize_problem(found, fmt=fmt, name=name, headers=headers, limits=limits)
        deep = nesting.feed(block) if nesting is not None else None
        if deep is not None:
            raise _too_deep_problem(deep, fmt=fmt, name=name)
        offset += len(block)


@dataclass(frozen=True)
class Oversize:
    """The first record or field over its limit, where it is."""

    rule_id: str  # delivery.line_too_long | delivery.field_too_long
    record: int  # 0-based among the file's records (CSV: 0 is the header)
    line: int  # the 1-based physical line the record starts on
    size: int  # bytes found (at least this many when not ``complete``)
    complete: bool  # False: it had not ended where Flux stopped reading
    field: int | None = None  # 0-based position of the field in its record


class RecordScan:
    """Lengths of delimited records and fields over consecutive blocks, in bounded memory.

    A record ends at a line end outside quotes (CSV) or at every line end (JSON Lines); a
    CSV field ends at a comma or a record end outside quotes. Quote state is the parity of
    the quotes seen, which is exact for CSV's doubled-quote escape (``""``). State carried
    between blocks: the parity, where the open record and field start, and counts. Per block:
    a few vector passes (numpy), and the field pass only where a record is longer than the
    field limit, so a typical file costs two byte comparisons per block.
    """

    def __init__(self, limits: SizeLimits, *, eol: int = _LF, csv: bool = True) -> None:
        self.max_line = limits.max_line_bytes
        self.max_field = limits.max_field_bytes if csv else None  # JSON: checked as read
        self.eol = eol
        self.csv = csv
        self.base = 0  # file offset of the next block
        self.parity = 0  # 1 while inside a quoted field
        self.record_start = 0  # file offset of the open record
        self.record_line = 1  # the physical line it starts on
        self.records = 0  # records ended so far
        self.lines = 0  # line ends seen so far
        self.field_start = 0  # file offset of the open field
        self.field_index = 0  # its position in the open record
        self.longest = 0  # the longest record ended so far

    def feed(self, block: bytes) -> Oversize | None:
        """Account for the next block; the first record or field over a limit, if any."""
        data = np.frombuffer(block, dtype=np.uint8)
        eols = np.flatnonzero(data == self.eol)
        # ``in`` is a C scan: most blocks hold no quote and skip the vector pass for one
        quotes = np.flatnonzero(data == _QUOTE) if self.csv and b'"' in block else _NONE
        parity = self.parity
        if quotes.size:
            ends = eols[_outside(quotes, eols, parity)]
        else:
            ends = eols if parity == 0 else _NONE
        # Block coordinates: the first record may have started in an earlier block (< 0).
        first = self.record_start - self.base
        starts = np.concatenate(([first], ends[:-1] + 1)) if ends.size else _NONE
        lengths = ends - starts
        tail_start = int(ends[-1]) + 1 if ends.size else first
        tail = data.size - tail_start  # the open record so far
        longest = int(lengths.max()) if lengths.size else 0
        found = self._record_over(eols, ends, starts, lengths, tail)
        if self.max_field is not None:
            if max(longest, tail) > self.max_field:
                field_over, open_field = self._fields(data, quotes, parity, eols, ends)
                if field_over is not None and (found is None or field_over.record <= found.record):
                    found = field_over
            else:  # no field can be longer than its record: only the open field's start
                open_field = self._open_field(data, quotes, parity, ends, tail_start)
            self.field_start, self.field_index = open_field
        if ends.size:
            self.record_line = self.lines + int(np.searchsorted(eols, ends[-1], "right")) + 1
            self.record_start = self.base + tail_start
            self.records += int(ends.size)
        self.parity = (parity + int(quotes.size)) & 1
        self.lines += int(eols.size)
        self.longest = max(self.longest, longest)
        self.base += data.size
        return found

    def _line_of(self, eols: np.ndarray, ends: np.ndarray, i: int) -> int:
        """The physical line record ``i`` of this block starts on (``i == ends.size``: the
        open record)."""
        if i == 0:
            return self.record_line
        return self.lines + int(np.searchsorted(eols, ends[i - 1], "right")) + 1

    def _record_over(
        self,
        eols: np.ndarray,
        ends: np.ndarray,
        starts: np.ndarray,
        lengths: np.ndarray,
        tail: int,
    ) -> Oversize | None:
        over = np.flatnonzero(lengths > self.max_line)
        if over.size:
            i = int(over[0])
            return Oversize(
                "delivery.line_too_long",
                record=self.records + i,
                line=self._line_of(eols, ends, i),
                size=int(lengths[i]),
                complete=True,
            )
        if tail > self.max_line:
            return Oversize(
                "delivery.line_too_long",
                record=self.records + int(ends.size),
                line=self._line_of(eols, ends, int(ends.size)),
                size=tail,
                complete=False,
            )
        return None

    def _separators(
        self, data: np.ndarray, quotes: np.ndarray, parity: int, lo: int = 0
    ) -> np.ndarray:
        """Offsets of the commas outside quotes in ``data[lo:]``."""
        commas = np.flatnonzero(data[lo:] == _COMMA) + lo
        if quotes.size:
            return commas[_outside(quotes, commas, parity)]
        return commas if parity == 0 else _NONE

    def _fields(
        self,
        data: np.ndarray,
        quotes: np.ndarray,
        parity: int,
        eols: np.ndarray,
        ends: np.ndarray,
    ) -> tuple[Oversize | None, tuple[int, int]]:
        """The first field over the limit in this block, and the open field at its end."""
        assert self.max_field is not None
        seps = np.sort(np.concatenate((self._separators(data, quotes, parity), ends)))
        first = self.field_start - self.base
        starts = np.concatenate(([first], seps[:-1] + 1)) if seps.size else _NONE
        lengths = seps - starts
        # The open record's fields start after the last record end.
        open_from = int(np.searchsorted(seps, ends[-1], "right")) if ends.size else 0
        carried = 0 if ends.size else self.field_index
        open_start = int(seps[-1]) + 1 if seps.size else first
        open_field = (self.base + open_start, carried + seps.size - open_from)
        over = np.flatnonzero(lengths > self.max_field)
        if over.size:
            j = int(over[0])
            k = int(np.searchsorted(ends, seps[j], "left"))  # records ended before it
            record_from = int(np.searchsorted(seps, ends[k - 1], "right")) if k else 0
            return Oversize(
                "delivery.field_too_long",
                record=self.records + k,
                line=self._line_of(eols, ends, k),
                size=int(lengths[j]),
                complete=True,
                field=j - record_from + (self.field_index if k == 0 else 0),
            ), open_field
        tail = data.size - open_start
        if tail > self.max_field:
            return Oversize(
                "delivery.field_too_long",
                record=self.records + int(ends.size),
                line=self._line_of(eols, ends, int(ends.size)),
                size=tail,
                complete=False,
                field=open_field[1],
            ), open_field
        return None, open_field

    def _open_field(
        self, data: np.ndarray, quotes: np.ndarray, parity: int, ends: np.ndarray, tail_start: int
    ) -> tuple[int, int]:
        """Where the field open at the block's end starts, and its position in its record,
        from the open record's bytes in this block only (at most the field limit)."""
        lo = max(tail_start, 0)
        commas = self._separators(data, quotes, parity, lo)
        carried = 0 if ends.size else self.field_index
        if commas.size:
            return self.base + int(commas[-1]) + 1, carried + int(commas.size)
        if ends.size:
            return self.base + lo, 0
        return self.field_start, self.field_index


def _outside(quotes: np.ndarray, positions: np.ndarray, parity: int) -> np.ndarray:
    """True where a position is outside quotes: an even number of quotes before it."""
    return ((np.searchsorted(quotes, positions) + parity) & 1) == 0


@dataclass(frozen=True)
class TooDeep:
    """The first JSON document found nested deeper than the limit, where it is."""

    depth: int  # the deepest level seen in it (at least this deep when not ``complete``)
    line: int  # the 1-based line of its first bracket over the limit
    offset: int  # that bracket's byte offset in the file
    limit: int
    complete: bool  # False: it had not closed where Flux stopped reading


class NestingScan:
    """How deep JSON text nests arrays and objects, over consecutive blocks, in bounded
    memory, so a document too deep is rejected before a parser holds it.

    Brackets count outside strings only. A string starts and ends at a quote no backslash
    escapes: a quote after an odd run of backslashes is part of the string (one backslash
    and a quote do not end it, two backslashes and a quote do). With ``lines`` (JSON Lines)
    every line is a document of its own and starts at depth 0 outside any string, so a
    broken line does not mislead the count of the next ones. Carried between blocks: the
    string state, the depth and whether the next byte is escaped. Per block: a few vector
    passes (numpy), the backslash one only in a block holding a backslash. Invalid JSON may
    be miscounted after its first fault, where a parser stops anyway.
    """

    def __init__(self, limit: int = MAX_JSON_DEPTH, *, lines: bool) -> None:
        self.limit = limit
        self.lines = lines
        self.base = 0  # file offset of the next block
        self.parity = 0  # 1 while inside a string
        self.depth = 0  # arrays and objects open at the end of the bytes seen
        self.escaped = False  # the next block's first byte follows an odd run of backslashes
        self.line_ends = 0  # line ends seen so far

    def feed(self, block: bytes) -> TooDeep | None:
        """Account for the next block; the first document over the limit, if any."""
        data = np.frombuffer(block, dtype=np.uint8)
        quotes = np.flatnonzero(data == _QUOTE) if b'"' in block else _NONE
        if self.escaped or b"\\" in block:  # ``in`` is a C scan: most blocks hold none
            quotes = self._unescaped(data, quotes)
        eols = np.flatnonzero(data == _LF) if self.lines and b"\n" in block else _NONE
        folded = data | _FOLD
        brackets = np.flatnonzero((folded == _OPENS) | (folded == _CLOSES))
        # A bracket is inside a string after an odd number of quotes: of the block, plus the
        # state carried (one document), or of its line (0: the one open when the block
        # started, which carries the state).
        quoted = np.searchsorted(quotes, brackets)
        line = None
        if eols.size:
            line = np.searchsorted(eols, brackets)
            quoted -= np.concatenate(([-self.parity], np.searchsorted(quotes, eols)))[line]
        else:
            quoted += self.parity
        outside = (quoted & 1) == 0
        brackets = brackets[outside]
        levels = np.cumsum(np.where(folded[brackets] == _OPENS, 1, -1))
        if line is None:
            levels += self.depth
        else:  # each line from 0 (less the level reached before it), the first from the carry
            line = line[outside]
            reached = np.concatenate(([0], levels))[np.searchsorted(brackets, eols)]
            levels -= np.concatenate(([-self.depth], reached))[line]
        over = np.flatnonzero(levels > self.limit)
        found = (
            self._too_deep(block, levels, line, brackets, eols, int(over[0])) if over.size else None
        )
        if eols.size:
            self.parity = int(quotes.size - np.searchsorted(quotes, eols[-1])) & 1
            open_line = line is not None and line.size > 0 and int(line[-1]) == eols.size
            self.depth = int(levels[-1]) if open_line else 0  # the line left open, if any
            self.line_ends += int(eols.size)
        else:
            self.parity = (self.parity + int(quotes.size)) & 1
            self.depth = int(levels[-1]) if levels.size else self.depth
            if not self.lines:
                self.line_ends += block.count(b"\n")
        self.base += data.size
        return found

    def _too_deep(
        self,
        block: bytes,
        levels: np.ndarray,
        line: np.ndarray | None,
        brackets: np.ndarray,
        eols: np.ndarray,
        i: int,
    ) -> TooDeep:
        """Where bracket ``i`` of the block, the first over the limit, is, and how deep its
        document goes within this block (no more is read)."""
        position = int(brackets[i])
        if line is None:  # one document: the rest of the block, up to where it closes
            rest = levels[i:]
            closed = np.flatnonzero(rest <= 0)
            depth = int(rest[: closed[0]].max() if closed.size else rest.max())
            complete = bool(closed.size)
            number = self.line_ends + block.count(b"\n", 0, position) + 1
        else:
            mine = line == line[i]
            depth = int(levels[mine].max())
            complete = int(line[i]) < eols.size  # its line ended in this block
            number = self.line_ends + int(line[i]) + 1
        return TooDeep(depth, number, self.base + position, self.limit, complete)

    def _unescaped(self, data: np.ndarray, quotes: np.ndarray) -> np.ndarray:
        """The quotes no backslash escapes (a byte is escaped by an odd run of backslashes
        just before it); notes whether the next block's first byte is."""
        slashes = np.flatnonzero(data == _BACKSLASH)
        lead = self.escaped  # this block's first byte is escaped (a backslash too, maybe)
        if lead and slashes.size and slashes[0] == 0:
            slashes = slashes[1:]
        escaped = _NONE
        self.escaped = False
        if slashes.size:
            breaks = np.flatnonzero(np.diff(slashes) != 1)
            last = np.append(breaks, slashes.size - 1)  # index of each run's last backslash
            first = np.concatenate(([0], breaks + 1))
            escaped = slashes[last[(last - first) % 2 == 0]] + 1  # after odd runs
            if escaped.size and escaped[-1] == data.size:
                self.escaped = True
                escaped = escaped[:-1]
        if lead:
            escaped = np.concatenate(([0], escaped))
        hits = escaped[data[escaped] == _QUOTE]  # the escaped quotes, each one of ``quotes``
        return np.delete(quotes, np.searchsorted(quotes, hits)) if hits.size else quotes


def _too_deep_problem(found: TooDeep, *, fmt: str, name: str) -> FileProblem:
    """The rejection an agency reads: the file, where, the depth found and the limit."""
    where = f"line {found.line}" if fmt == "jsonl" else f"the JSON document (line {found.line})"
    depth = f"{found.depth}" if found.complete else f"at least {found.depth}"
    return FileProblem(
        "delivery.unreadable",
        f"{name}: {where} nests arrays and objects {depth} levels deep, more than the limit "
        f"of {found.limit} (level {found.limit + 1} opens at byte {found.offset:,}); Flux "
        "rejects the file without parsing it (parsing costs grow much faster than the depth). "
        "A table's values need a few levels: deliver nested values flatter, or as text",
    )


def _oversize_problem(
    found: Oversize, *, fmt: str, name: str, headers: Sequence[str], limits: SizeLimits
) -> FileProblem:
    """The rejection an agency reads: the file, where, the size found and the limit."""
    if fmt == "jsonl":
        where = f"line {found.line}"
    elif found.record == 0:
        where = "the header record (line 1)"
    else:
        where = f"record {found.record} (from line {found.line})"
    size = (
        f"{found.size:,} bytes"
        if found.complete
        else f"at least {found.size:,} bytes (Flux stopped reading there)"
    )
    if found.field is None:
        hint = (
            "check that every record is one line, ended by a line end"
            if fmt == "jsonl"
            else "check for an unclosed quote (it runs on to the end of the file) or a "
            "missing line end"
        )
        return FileProblem(
            "delivery.line_too_long",
            f"{name}: {where} is {size}, more than the limit of {limits.max_line_bytes:,} "
            f"bytes per record; Flux rejects the file without parsing it. A record this long "
            f"is no table row: {hint}; a larger limit is the Flux operator's setting "
            f"({MAX_LINE_BYTES_ENV})",
        )
    column = headers[found.field] if found.field < len(headers) else None
    label = f"field {found.field + 1}" + (f" ({column})" if column else "")
    return FileProblem(
        "delivery.field_too_long",
        f"{name}: {label} of {where} is {size}, more than the limit of "
        f"{limits.max_field_bytes:,} bytes per field; Flux rejects the file without parsing "
        "it. A value this long is no table value: check for an unclosed quote or a file "
        "embedded in a cell; a larger limit is the Flux operator's setting "
        f"({MAX_FIELD_BYTES_ENV})",
    )


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
    if widest.max() > limits.max_field_bytes:  # type: ignore[operator]
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
    if total.max() > limits.max_line_bytes:  # type: ignore[operator]
        row = sizes.row(int((total > limits.max_line_bytes).arg_true()[0]), named=True)
        raise FileProblem(
            "delivery.line_too_long",
            f"{display_name(facts.path)}: {unit} {row[ROW]} is "
            f"{sum(row[c] for c in columns):,} bytes as text, more than the limit of "
            f"{limits.max_line_bytes:,} bytes per record; a larger limit is the Flux "
            f"operator's setting ({MAX_LINE_BYTES_ENV})",
        )


# -- Parquet page headers (read, never the pages) ------------------------------------------


def _bound_parquet(handle: ConfinedFile, limits: SizeLimits, *, name: str) -> None:
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


def short_rows(facts: FileFacts, rows: int) -> pl.DataFrame | None:
    """The CSV records with fewer fields than the header, counted on the file's lines.

    polars cannot tell ``1,a`` (a field missing) from ``1,a,`` (an empty field): both read
    as null. This pass counts the separators outside quotes per record (records may span
    lines inside quotes) and must find as many records as polars read, or the file's
    record boundaries are ambiguous and it is rejected rather than loaded on a guess.
    """
    count = _FieldCount()
    for lines in _physical_lines(facts.source):
        count.add(lines)
    records, short = count.finish()
    if records != rows:
        raise FileProblem(
            "delivery.unreadable",
            f"{rows} records parsed but {records} delimited by the line ends and quotes: the "
            "record boundaries are ambiguous; check for unbalanced quotes",
        )
    return short if short.height else None


_COUNT_BATCH = 250_000
_QUOTED = r'"[^"]*(?:"|$)'  # a quoted span, or one left open at the end of the line


def _physical_lines(source: str) -> Iterator[pl.DataFrame]:
    """The file's lines as ``line`` frames, batch by batch (classic Mac files split on
    '\\r', without the empty piece after a final line end, as polars reads them)."""
    if _eol_char(source) == "\n":
        lines = pl.scan_lines(source, glob=False)  # a literal path, never a pattern
        yield from lines.collect_batches(chunk_size=_COUNT_BATCH)
        return
    with open(source, "rb") as handle:  # scan_lines splits on '\n' only
        rest = b""
        while block := handle.read(HASH_BLOCK):
            *pieces, rest = (rest + block).split(b"\r")
            yield _lines_frame(pieces)
        if rest:
            yield _lines_frame([rest])


def _lines_frame(pieces: list[bytes]) -> pl.DataFrame:
    # '\r' never occurs inside a UTF-8 multi-byte character: every piece decodes whole.
    return pl.DataFrame({"line": [p.decode("utf-8", "replace") for p in pieces]})


@dataclass
class _FieldCount:
    """Fields per CSV record over batches of physical lines, carrying the open record."""

    parity: int = 0  # 1 while the lines seen end inside a quoted field
    record: int = -1  # index of the record the last line belongs to (0: the header)
    commas: int = 0  # separators of that record so far
    header: int | None = None  # the header's fields, once its record is complete
    found: list[pl.DataFrame] = field(default_factory=list)

    def add(self, lines: pl.DataFrame) -> None:
        if lines.height == 0:
            return
        if self.parity == 0 and self.record >= 0:  # the batch starts a record: close the last
            self._complete(self._open())
            self.commas = 0
        line = pl.col("line")
        quotes = line.str.count_matches('"', literal=True).alias("q")
        frame = lines.select(quotes, line, line.str.count_matches(",", literal=True).alias("c"))
        inside = ((pl.col("q").cum_sum() - pl.col("q") + self.parity) % 2 == 1).alias("inside")
        frame = frame.with_columns(inside).with_columns(
            ((~pl.col("inside")).cum_sum().cast(pl.Int64) + self.record).alias("record")
        )
        self.parity = (self.parity + int(frame.get_column("q").sum())) % 2
        frame = _outside_quotes(frame)
        if frame.get_column("inside").any():
            per = frame.group_by("record", maintain_order=True).agg(pl.col("c").sum())
        else:
            per = frame.select("record", "c")
        per = per.select(
            "record",
            (
                pl.col("c").cast(pl.Int64)
                + pl.when(pl.col("record") == self.record).then(self.commas).otherwise(0)
            ),
        )
        self.record, self.commas = int(per.item(-1, "record")), int(per.item(-1, "c"))
        self._complete(per.head(-1))

    def _complete(self, per: pl.DataFrame) -> None:
        if self.header is None and per.height and per.item(0, "record") == 0:
            self.header = per.item(0, "c") + 1
        if self.header is not None:
            self.found.append(per.filter((pl.col("record") > 0) & (pl.col("c") + 1 < self.header)))

    def _open(self) -> pl.DataFrame:
        """The record the lines seen so far end in, as ``per`` rows (none before any line)."""
        schema = {"record": pl.Int64, "c": pl.Int64}
        rows = [(self.record, self.commas)] if self.record >= 0 else []
        return pl.DataFrame(rows, schema=schema, orient="row")

    def finish(self) -> tuple[int, pl.DataFrame]:
        """(data records, short records as ROW / DELIVERED_FIELDS / EXPECTED_FIELDS)."""
        last = self._open()
        self._complete(last)
        header = self.header or 1
        short = pl.concat(self.found) if self.found else last.clear()
        return max(self.record, 0), short.select(
            pl.col("record").alias(ROW),
            (pl.col("c") + 1).alias(DELIVERED_FIELDS),
            pl.lit(header, dtype=pl.Int64).alias(EXPECTED_FIELDS),
        )


def _outside_quotes(frame: pl.DataFrame) -> pl.DataFrame:
    """``c`` corrected to the separators outside quotes, on the few lines with quotes
    (a line starting inside a quoted field first drops the text up to its closing quote)."""
    quoted = (pl.col("q") > 0) | pl.col("inside")
    if not frame.select(quoted.any()).item():
        return frame
    line = pl.col("line")
    after_open = pl.when(pl.col("inside")).then(line.str.replace(r'^[^"]*"', "")).otherwise(line)
    outside = after_open.str.replace_all(_QUOTED, "").str.count_matches(",", literal=True)
    fixed = pl.when(pl.col("inside") & (pl.col("q") == 0)).then(0).otherwise(outside)
    rows = frame.with_row_index("i").filter(quoted).select("i", fixed.cast(pl.UInt32).alias("c"))
    corrected = frame.get_column("c").scatter(rows.get_column("i"), rows.get_column("c"))
    return frame.with_columns(corrected.alias("c"))
