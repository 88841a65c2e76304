"""What an upload must be before a byte of it is written: a plain data file name, a dataset
the agency delivers, a delivery day its partitions hold, a content type the loader reads,
and bytes that are what the name says (content is detected from bytes, not trusted from
a name or a header)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from flux_pipelines.contracts.registry import Agency, Registry
from flux_pipelines.errors import ConfigurationError
from flux_pipelines.ingest.delivery import is_data_file_name
from flux_pipelines.ingest.readers import SUPPORTED_SUFFIXES, file_format
from flux_pipelines.intake.errors import IntakeRefused

# Room is left for the hidden staging name (".<name>.<12 hex>.part") within the usual
# 255-byte limit of a file name.
MAX_NAME_BYTES = 200
# Letters, digits and a few punctuation marks: no separator, no glob or shell character,
# no control character, nothing a reader or a spreadsheet could read as something else.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._()+,=@ -]*$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DELIVERY_ID = re.compile(r"^[0-9a-f]{32}$")

# Declared types accepted per loader format; no header at all means "as the name says".
# application/octet-stream is what generic clients send for any file.
ANY = "application/octet-stream"
CONTENT_TYPES: dict[str, frozenset[str]] = {
    "csv": frozenset({"text/csv", "application/csv", "text/plain", ANY}),
    "json": frozenset({"application/json", ANY}),
    "jsonl": frozenset(
        {
            "application/x-ndjson",
            "application/jsonl",
            "application/jsonlines",
            "application/x-jsonlines",
            "application/json",
            "text/plain",
            ANY,
        }
    ),
    "parquet": frozenset({"application/vnd.apache.parquet", "application/x-parquet", ANY}),
}
PARQUET_MAGIC = b"PAR1"
# What a text delivery must not start with: the loader would reject it whole anyway, so it is
# refused before it lands, saying what it is.
_NOT_TEXT = (
    (b"\x1f\x8b", "gzip-compressed data"),
    (b"PK\x03\x04", "a zip archive or an Excel workbook"),
    (PARQUET_MAGIC, "a Parquet file"),
    (b"%PDF", "a PDF document"),
    (b"\x7fELF", "an executable"),
)
SNIFF_BYTES = 8


@dataclass(frozen=True)
class Target:
    """Where an upload goes, every part checked."""

    agency: str | None  # None: an operator's validation (the contract's own severities)
    dataset: str
    day: dt.date
    name: str
    format: str  # csv | json | jsonl | parquet (``readers.file_format``)


def check_name(name: str) -> str:
    """``name`` if it is a plain data file name the loader reads; a 400 (415 for a type the
    loader does not read) saying why otherwise."""
    shown = name.encode("unicode_escape").decode("ascii")[:120]
    if not name or len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise _bad_name(shown, f"a file name is 1 to {MAX_NAME_BYTES} bytes")
    if any(c in name for c in ("/", "\\", "\0")) or name in {".", ".."}:
        raise _bad_name(shown, "a file name is one plain name: no folder, '..', '\\' or NUL")
    if not is_data_file_name(name):
        raise _bad_name(
            shown,
            "hidden, temporary and manifest names (starting with '.', '_' or '~', ending in "
            ".part, .tmp and the like) are not data files",
        )
    if not _NAME.fullmatch(name) or name.endswith((" ", ".")):
        raise _bad_name(
            shown,
            "use letters, digits and . _ - ( ) + , = @ or spaces, starting with a letter or digit",
        )
    suffix = PurePosixPath(name).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise IntakeRefused(
            415,
            "unsupported_type",
            f"{shown}: Flux loads {', '.join(sorted(SUPPORTED_SUFFIXES))} files (uncompressed)",
        )
    return name


def _bad_name(shown: str, why: str) -> IntakeRefused:
    return IntakeRefused(400, "bad_file_name", f"file name {shown!r} refused: {why}")


def check_day(value: str, agency: Agency | None, today: dt.date | None = None) -> dt.date:
    """A real YYYY-MM-DD day from the agency's onboarding to tomorrow (UTC), the days the
    landing sensor loads; a 422 otherwise."""
    try:
        day = dt.date.fromisoformat(value) if _DAY.fullmatch(value) else None
    except ValueError:
        day = None
    if day is None:
        raise IntakeRefused(422, "bad_day", f"day {value[:40]!r} is not a date (YYYY-MM-DD)")
    if agency is not None:
        last = (today or dt.datetime.now(dt.UTC).date()) + dt.timedelta(days=1)
        if not agency.onboarded <= day <= last:
            raise IntakeRefused(
                422,
                "bad_day",
                f"{day} is not a delivery day of {agency.id}: deliver a day from "
                f"{agency.onboarded} (onboarded) to tomorrow",
            )
    return day


def check_dataset(registry: Registry, agency: Agency | None, dataset: str) -> str:
    """A dataset the agency delivers (any known dataset when no agency); 404 otherwise."""
    try:
        registry.versions(dataset)
    except ConfigurationError:
        raise IntakeRefused(404, "unknown_dataset", f"no dataset {dataset[:60]!r}") from None
    if agency is not None and dataset not in agency.datasets:
        raise IntakeRefused(
            404,
            "unknown_dataset",
            f"{agency.id} does not deliver {dataset}; it delivers {', '.join(agency.datasets)}",
        )
    return dataset


def check_delivery_id(value: str) -> str:
    """A delivery id as the intake makes them (uuid4 hex): it names a file under state/."""
    if not _DELIVERY_ID.fullmatch(value):
        raise IntakeRefused(404, "not_found", "no such delivery here for you")
    return value


def check_content_type(declared: str | None, fmt: str) -> None:
    """415 unless the declared type (if any) is one a ``fmt`` file may be sent as."""
    if declared is None or not declared.strip():
        return
    media = declared.split(";", 1)[0].strip().lower()
    allowed = CONTENT_TYPES[fmt]
    if media not in allowed:
        raise IntakeRefused(
            415,
            "unsupported_type",
            f"a .{fmt} delivery is sent raw as {' or '.join(sorted(allowed))}, not "
            f"{media[:60]!r} (the request body is the file itself: no form, no compression)",
        )


def sniff(head: bytes, fmt: str) -> None:
    """415 when the first bytes say the file is not what its name says."""
    if fmt == "parquet":
        if not head.startswith(PARQUET_MAGIC):
            raise IntakeRefused(
                415, "content_mismatch", "the file is not Parquet (it does not start with PAR1)"
            )
        return
    for signature, what in _NOT_TEXT:
        if head.startswith(signature):
            raise IntakeRefused(
                415,
                "content_mismatch",
                f"the file is {what}, not {fmt} text; deliver the uncompressed {fmt} file",
            )


def check_parquet_tail(tail: bytes, fmt: str) -> None:
    """A Parquet file ends with its footer's magic; anything else is cut short."""
    if fmt == "parquet" and not tail.endswith(PARQUET_MAGIC):
        raise IntakeRefused(
            415,
            "content_mismatch",
            "the Parquet file is incomplete (it does not end with PAR1); upload it again",
        )


def format_of(name: str) -> str:
    return file_format(Path(name))
