"""Read delivered files as text chunks, whatever their format.

Every reader yields polars frames of Utf8 columns with normalised headers and a 1-based
``_row_number`` (the record's position among the file's data records, header excluded),
in bounded chunks so memory does not grow with file size. Anything that makes a whole file
unusable is raised as a ``FileProblem`` for the loader to turn into a delivery-level fatal.

A delivered file is opened once, confined to its agency's landing folder (``confine.py``: no
link followed, no FIFO or folder opened), and read only through that descriptor: polars gets
``/proc/self/fd/<n>`` with globbing off, so a name like ``*.csv`` or ``a[1].csv`` is a name,
never a pattern. A file that changes while it is read is rejected, not loaded in part.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import os
import stat
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import polars as pl

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


def inspect_file(path: Path) -> FileFacts:
    """Open the file confined to its landing folder, start hashing it (and checking its
    encoding), and read its header. ``FileFacts.close`` (or ``read_chunks`` reaching the
    end) closes it."""
    check_file_name(path)
    handle = open_delivered(path)
    try:
        fmt = file_format(path)
        size = handle.stat.st_size
        if size == 0:
            raise FileProblem("delivery.empty_file", "the file is empty (0 bytes)")
        reader = handle.reopen()
        stop = threading.Event()
        digest = _HASHER.submit(
            _hash_and_check_text, reader, check_utf8=fmt != "parquet", stop=stop
        )
        try:
            headers = _headers(handle.via, fmt)
        except FileProblem:
            # A bad encoding is the root cause: report it first. Judged on the head the
            # header came from, not by waiting for the whole hash (a 50 GB file of NUL
            # bytes has no header and must not keep the hashing thread busy for minutes).
            stop.set()
            if fmt != "parquet":
                _check_utf8_head(handle.head(HEADER_MAX_BYTES))
            raise
        if not headers:
            raise FileProblem("delivery.empty_file", "the file has no columns")
        _reject_duplicates(headers)
    except BaseException:
        handle.close()
        raise
    return FileFacts(
        path=path, size_bytes=size, format=fmt, headers=headers, digest=digest, handle=handle
    )


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


def _headers(source: str, fmt: str) -> tuple[str, ...]:
    try:
        if fmt == "csv":
            _reject_duplicates([normalise_header(h) for h in _csv_header(source)])
        names = _scan(source, fmt).collect_schema().names()
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise FileProblem(
            "delivery.unreadable", f"the file cannot be parsed as {fmt}: {exc}"
        ) from exc
    except csv.Error as exc:
        raise FileProblem("delivery.unreadable", f"the header cannot be parsed: {exc}") from exc
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


# -- file names ---------------------------------------------------------------------------------


def display_name(path: Path) -> str:
    """The file's name as text for logs, tables and reports: bytes that are not UTF-8
    (a name is bytes on POSIX) shown as ``\\xNN`` instead of breaking every writer."""
    return Path(path).name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


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
