"""Read delivered files as text chunks, whatever their format.

Every reader yields polars frames of Utf8 columns with normalised headers and a 1-based
``_row_number`` (the record's position among the file's data records, header excluded),
in bounded chunks so memory does not grow with file size. Anything that makes a whole file
unusable is raised as a ``FileProblem`` for the loader to turn into a delivery-level fatal.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from flux_pipelines.contracts.slugs import normalise_header
from flux_pipelines.contracts.validator import ROW

CSV_SUFFIXES = {".csv", ".txt"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
SUPPORTED_SUFFIXES = CSV_SUFFIXES | JSONL_SUFFIXES | {".json", ".parquet"}
HASH_BLOCK = 8 * 1024 * 1024
DEFAULT_CHUNK_ROWS = 250_000
EOL_SNIFF_BYTES = 1 << 16


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

    @property
    def sha256(self) -> str:
        """The file's sha256; raises the encoding FileProblem if the bytes are not UTF-8."""
        return self.digest.result()


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
    """Start hashing the file (and checking its encoding), and read its header."""
    fmt = file_format(path)
    size = path.stat().st_size
    if size == 0:
        raise FileProblem("delivery.empty_file", "the file is empty (0 bytes)")
    digest = _HASHER.submit(_hash_and_check_text, path, check_utf8=fmt != "parquet")
    try:
        headers = _headers(path, fmt)
    except FileProblem:
        digest.result()  # a bad encoding is the root cause: report it first
        raise
    if not headers:
        raise FileProblem("delivery.empty_file", "the file has no columns")
    _reject_duplicates(headers)
    return FileFacts(path=path, size_bytes=size, format=fmt, headers=headers, digest=digest)


def _hash_and_check_text(path: Path, *, check_utf8: bool) -> str:
    """One pass computes the sha256 and proves the bytes are UTF-8 (a cheap C decoder)."""
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")()
    size = 0
    with path.open("rb") as handle:
        while block := handle.read(HASH_BLOCK):
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


def _csv_header(path: Path) -> list[str]:
    """The delivered header record as written (polars renames repeated names silently)."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return next(csv.reader(handle), [])


def _headers(path: Path, fmt: str) -> tuple[str, ...]:
    try:
        if fmt == "csv":
            _reject_duplicates([normalise_header(h) for h in _csv_header(path)])
        names = _scan(path, fmt).collect_schema().names()
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise FileProblem(
            "delivery.unreadable", f"the file cannot be parsed as {fmt}: {exc}"
        ) from exc
    except csv.Error as exc:
        raise FileProblem("delivery.unreadable", f"the header cannot be parsed: {exc}") from exc
    return tuple(n for n in names if n != ROW)


def _scan(path: Path, fmt: str) -> pl.LazyFrame:
    """A lazy text view of the file with normalised headers and the row number."""
    if fmt == "csv":
        frame = pl.scan_csv(
            path,
            eol_char=_eol_char(path),
            infer_schema=False,
            with_column_names=lambda cols: [normalise_header(c) for c in cols],
            raise_if_empty=False,
            encoding="utf8",
        )
    elif fmt == "jsonl":
        frame = pl.scan_ndjson(path, infer_schema_length=None)
    elif fmt == "json":
        frame = pl.read_json(path).lazy()
    else:
        frame = pl.scan_parquet(path)
    if fmt != "csv":
        delivered = frame.collect_schema().names()
        _reject_duplicates([normalise_header(c) for c in delivered])
        frame = frame.rename({c: normalise_header(c) for c in delivered})
        frame = frame.with_columns(
            _as_text(name, dtype) for name, dtype in frame.collect_schema().items()
        )
    return frame.with_row_index(ROW, offset=1).with_columns(pl.col(ROW).cast(pl.Int64))


def _eol_char(path: Path) -> str:
    """'\\r' for files with classic Mac line ends (no '\\n' at all; Treasury's tas_list.csv).

    polars splits lines on one character only; read with '\\n', such a file is one huge
    header line. CRLF files end in '\\n' and read fine either way.
    """
    with path.open("rb") as handle:
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
    """Yield the file's rows as text frames of at most ``chunk_rows`` rows."""
    try:
        for chunk in _scan(facts.path, facts.format).collect_batches(chunk_size=chunk_rows):
            if chunk.height:
                yield chunk
    except (pl.exceptions.PolarsError, OSError) as exc:
        _ = facts.sha256  # a bad encoding is the root cause: report it first
        raise FileProblem(
            "delivery.unreadable",
            f"the file cannot be parsed as {facts.format}: {_first_line(exc)}; "
            "check quoting and the number of fields per line",
        ) from exc


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
