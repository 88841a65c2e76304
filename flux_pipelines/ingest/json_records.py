"""JSON and JSON Lines records: where they are in the file, and reading them as text.

A ``.json`` delivery is an array of objects, one per record. Some agencies wrap that array
in an object (``{"version": 1, "releases": [...]}``); the contract then says under which
keys (customProperty ``jsonRecordsPath``, ``ReadOptions.json_records_path``). Read whole,
such a document became one row holding nothing the contract knows: a 1,010-record delivery
loaded as one empty row and passed. So the layout is established first, in one streaming
pass over the bytes (``LayoutScan``: ``scanning.NestingScan`` that also finds where the
records are; numpy, bounded memory whatever the file's size):

- a top-level array: its elements are the records; each is one record for
  ``max_line_bytes`` (an element over it is rejected before any parser holds it);
- an object and a declared path: the array the path leads to, cut out into the staging
  area (a kernel copy) and read as above; a path that leads nowhere is rejected, naming the
  keys that are there;
- an object and no declared path: if it holds an array of objects, the records seem to sit
  there and the file is rejected naming the key to declare (``delivery.layout_mismatch``),
  never read as one row; otherwise the object is one record (whole, at most one record
  long), and the loader rejects it unless one of its keys is a contract column;
- anything else (a number, a string): rejected.

Records are then read by DuckDB, which streams an array (reading a 200 MB array peaks at
~390 MB RSS, a 400 MB one too; polars parsed them whole: 2.1 and 3.6 GB), every field as
``VARCHAR``, never type-inferred: a number is kept as DuckDB reads it (``1e309``, ``NaN``
included: the contract's rules judge them), a nested value is its compact JSON text, and a
field that is a number in one record and an object in another cannot fail the file
(polars' inference did, with advice about ``infer_schema_length``). Before reading, one
DuckDB pass lists every record's keys (the file's columns in order of first appearance)
and rejects a record that is no object or that gives a key twice.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import polars as pl

from flux_pipelines.contracts.model import MAX_LINE_BYTES_ENV, SizeLimits
from flux_pipelines.ingest.scanning import (
    CLOSES,
    COMMA,
    FOLD,
    MAX_JSON_DEPTH,
    NONE,
    OPENS,
    QUOTE,
    SCAN_BLOCK,
    FileProblem,
    NestingScan,
    StagedText,
    TooDeep,
    reject_duplicates,
    too_deep_problem,
)
from flux_pipelines.names import ROW
from flux_pipelines.slugs import normalise_header

if TYPE_CHECKING:
    import duckdb

_COLON = ord(":")
_OPEN_ARRAY, _OPEN_OBJECT = ord("["), ord("{")
_CLOSE_ARRAY, _CLOSE_OBJECT = ord("]"), ord("}")
_SPACE = b" \t\r\n"
_BOM = b"\xef\xbb\xbf"
# A key of the wrapping object, or one of its scalar values, is read to check it: longer
# than this it is no wrapper's key (a value this long is skipped, not read).
MAX_KEY_BYTES = 64 * 1024
# Members of the wrapping objects walked one by one in Python (a wrapper has a handful; a
# top-level object that is one record has one per column).
MAX_WRAPPER_MEMBERS = 100_000
# DuckDB refuses a JSON value larger than its ``maximum_object_size`` (16 MiB by default);
# records were bounded by ``max_line_bytes`` before, so it is set just above that.
DUCKDB_MIN_OBJECT = 16 << 20
# Distinct keys over all records: each is a column read as text. A table has tens or
# hundreds; records keyed by values (``{"2026-01-05": ...}``) would make one per record.
MAX_KEYS = 10_000


class Readable(Protocol):
    """What the scans read: a descriptor, its stat as opened, and a path for libraries."""

    @property
    def via(self) -> str: ...

    @property
    def stat(self) -> os.stat_result: ...

    def fileno(self) -> int: ...


@dataclass
class JsonRecords:
    """Where a JSON or JSON Lines file's records are, and the keys they hold."""

    source: str  # the file DuckDB reads: the delivered one, or a staged copy
    form: str  # DuckDB's format: array | newline_delimited | unstructured (one object)
    limits: SizeLimits
    name: str  # the delivered file's name, for reasons
    keys: tuple[str, ...] = ()  # as delivered, in order of first appearance
    records: int = 0
    single_object: bool = False  # a top-level object read as the file's one record
    staged: list[StagedText] = field(default_factory=list)  # copies to delete after reading

    @property
    def headers(self) -> tuple[str, ...]:
        return tuple(normalise_header(k) for k in self.keys)

    @property
    def max_object(self) -> int:
        return max(DUCKDB_MIN_OBJECT, self.limits.max_line_bytes + (1 << 20))


# -- the layout of a .json document ----------------------------------------------------------


@dataclass
class _Frame:
    """An array or object open at a level the walk follows."""

    kind: int  # '[' or '{'
    start: int  # offset of its opening bracket
    on_path: bool  # the top object, or a value on the declared records path
    mark: int  # offset of the opening bracket or of the last ',' of its members
    key: str | None = None  # the member being read
    colon: int = -1  # offset of its ':' (-1: none since ``mark``)
    child_end: int = -1  # where the member's container value closed (-1: a scalar)
    keys: list[str] = field(default_factory=list)
    # (key, the first byte of its first element) of each array member: records candidates
    arrays: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Layout:
    """Where a .json document's records are: the byte span of their array, or the whole
    document when it is one object (``single``)."""

    start: int
    end: int  # offset of the closing bracket
    elements: int  # records counted by the scan (DuckDB's count is the one used)
    single: bool


class LayoutScan(NestingScan):
    """One streaming pass over a .json document: its depth (as ``NestingScan``), where its
    records array is and how long each record is, and a walk of the wrapping objects.

    Per block, numpy finds the brackets, commas and colons outside strings and the level
    each is at (arrays and objects open around it). The few events of the levels a wrapper
    can hold (``walk``: 0 for a top-level array, the path's length for a wrapper) are
    walked in Python, one by one; the records array's separators (its commas, at the level
    below) are handled as vectors, so a file of a million records costs no Python loop.
    """

    def __init__(
        self,
        text: Readable,
        *,
        top: int,
        start: int,
        path: tuple[str, ...],
        limits: SizeLimits,
        name: str,
        one_record: bool = False,
    ) -> None:
        wrapped = len(path) if path else 1 if top == _OPEN_OBJECT else 0
        self.one_record = one_record  # the top object is a record, never a wrapper
        # Depth counts from the records array, as for a top-level one: a wrapper's levels
        # are added (an undeclared top-level object may be one).
        super().__init__(MAX_JSON_DEPTH + wrapped, lines=False)
        self.text = text
        self.fd = text.fileno()
        self.top = top
        self.start = start
        self.path = path
        self.walk = 0 if top == _OPEN_ARRAY else max(len(path), 1)
        self.limits = limits
        self.name = name
        self.base = start
        self.stack: list[_Frame] = []
        self.members = 0
        self.top_end: int | None = None
        self.rec_open: int | None = None  # the records array's '['
        self.rec_close: int | None = None  # its ']'
        self.rec_mark = 0  # offset of the last boundary ('[' or ',') of its elements
        # the block the mark lies in, its offset and the line ends before it: the mark's line
        # is counted only for a rejection
        self.rec_mark_block: tuple[bytes, int, int] = (b"", 0, 0)
        self.rec_count = 0  # elements ended so far
        self.path_keys: dict[int, list[str]] = {}  # level -> keys of the on-path object
        self.path_scalar: dict[int, str] = {}  # level -> what the path's key held instead
        self.top_frame: _Frame | None = None
        self._block = b""
        # lines before the document (whitespace), so reasons give the file's line numbers
        self.line_ends = os.pread(self.fd, min(start, SCAN_BLOCK), 0).count(b"\n")

    # -- driving --------------------------------------------------------------------------
    def run(self) -> Layout:
        size, offset = self.text.stat.st_size, self.start
        while offset < size:
            block = os.pread(self.fd, min(SCAN_BLOCK, size - offset), offset)
            if not block:
                break
            deep = self.feed(block)
            if deep is not None:
                raise too_deep_problem(deep, fmt="json", name=self.name)
            offset += len(block)
        return self._finish()

    def feed(self, block: bytes) -> TooDeep | None:
        self._block = block
        data = np.frombuffer(block, dtype=np.uint8)
        quotes = np.flatnonzero(data == QUOTE) if b'"' in block else NONE
        if self.escaped or b"\\" in block:
            quotes = self._unescaped(data, quotes)
        folded = data | FOLD
        wanted = (folded == OPENS) | (folded == CLOSES) | (data == COMMA)
        if self.walk:  # a top-level array's walk needs no colon: its members are records
            wanted |= data == _COLON
        found = np.flatnonzero(wanted)
        events = found[((np.searchsorted(quotes, found) + self.parity) & 1) == 0]
        chars = data[events]
        kinds = chars | FOLD
        delta = np.where(kinds == OPENS, 1, np.where(kinds == CLOSES, -1, 0))
        after = self.depth + np.cumsum(delta)
        levels = after - (delta == 1)  # a bracket's level is its container's depth
        if after.size and after.min() < 0:
            at = int(events[int(np.argmax(after < 0))])
            raise self._malformed(self.base + at, f"a '{chr(block[at])}' closes nothing")
        brackets = np.flatnonzero(delta)
        over = np.flatnonzero(after[brackets] > self.limit)
        if over.size:
            levels_b, where = after[brackets], events[brackets]
            return self._too_deep(block, levels_b, None, where, NONE, int(over[0]))
        if self.top_end is not None:
            self._nothing_after(block, 0)
        for i in np.flatnonzero(levels <= self.walk):
            self._event(self.base + int(events[i]), int(chars[i]), int(levels[i]))
        if self.rec_open is not None and (self.rec_close is None or self.rec_close >= self.base):
            commas = events[(levels == self.walk + 1) & (chars == COMMA)] + self.base
            self._records(block, commas)
        self.parity = (self.parity + int(quotes.size)) & 1
        self.depth = int(after[-1]) if after.size else self.depth
        self.line_ends += block.count(b"\n")
        self.base += data.size
        return None

    def _finish(self) -> Layout:
        if self.top_end is None or self.parity:
            still = "a string" if self.parity else f"{max(self.depth, 1)} array(s) or object(s)"
            raise FileProblem(
                "delivery.unreadable",
                f"{self.name}: the JSON document ends before it is complete ({still} still "
                "open at the end of the file): the file is cut short, or not JSON",
            )
        if self.top == _OPEN_ARRAY:
            return Layout(self.start, self.top_end, self.rec_count, single=False)
        if self.path:
            if self.rec_open is None or self.rec_close is None:
                raise self._path_nowhere()
            return Layout(self.rec_open, self.rec_close, self.rec_count, single=False)
        arrays = self.top_frame.arrays if self.top_frame is not None else []
        of_objects = [k for k, first in arrays if first == "{"]
        if of_objects and not self.one_record:
            raise _undeclared_wrapper(self.name, of_objects)
        size = self.top_end - self.start + 1
        if size > self.limits.max_line_bytes:
            raise FileProblem(
                "delivery.line_too_long",
                f"{self.name}: the JSON document is one object, so one record, of {size:,} "
                f"bytes, more than the limit of {self.limits.max_line_bytes:,} bytes per "
                "record; deliver the records as an array of objects (each one is a record) "
                f"or ask the Flux operator to raise {MAX_LINE_BYTES_ENV}",
            )
        return Layout(self.start, self.top_end, 1, single=True)

    # -- the walk of the wrapping levels ------------------------------------------------
    def _event(self, pos: int, char: int, level: int) -> None:
        if char in (_OPEN_ARRAY, _OPEN_OBJECT):
            self._open(pos, char, level)
        elif char in (_CLOSE_ARRAY, _CLOSE_OBJECT):
            self._close(pos, char, level)
        elif level == 0:
            raise self._malformed(pos, "text after the JSON document")
        elif char == _COLON:
            self._colon(pos, level)
        else:
            self._comma(pos, level)

    def _open(self, pos: int, char: int, level: int) -> None:
        if level == 0:
            if pos != self.start:
                raise self._malformed(pos, "text after the JSON document")
            frame = _Frame(char, pos, on_path=True, mark=pos)
            self.stack.append(frame)
            self.top_frame = frame
            if char == _OPEN_ARRAY:
                self.rec_open = self.rec_mark = pos
                self.rec_mark_block = (self._block, self.base, self.line_ends)
            return
        parent = self.stack[level - 1]
        on_path = False
        if parent.kind == _OPEN_OBJECT and parent.on_path:
            if parent.colon < 0:
                raise self._malformed(pos, "a value without a key")
            self._blank(parent.colon + 1, pos, "a member's value")
            if self.path and level <= len(self.path) and parent.key == self.path[level - 1]:
                want = _OPEN_ARRAY if level == len(self.path) else _OPEN_OBJECT
                if char != want:
                    self.path_scalar[level] = f"an {_kind(char)}"
                else:
                    on_path = True
                    if level == len(self.path):
                        self.rec_open = self.rec_mark = pos
                        self.rec_mark_block = (self._block, self.base, self.line_ends)
            elif not self.path and level == 1 and char == _OPEN_ARRAY:
                parent.arrays.append((parent.key or "", self._first_byte(pos + 1)))
        self.stack.append(_Frame(char, pos, on_path=on_path, mark=pos))

    def _close(self, pos: int, char: int, level: int) -> None:
        frame = self.stack.pop()
        if (frame.kind == _OPEN_ARRAY) != (char == _CLOSE_ARRAY):
            raise self._malformed(pos, f"a '{chr(char)}' closes an {_kind(frame.kind)}")
        if frame.kind == _OPEN_OBJECT and frame.on_path:
            self._end_member(frame, pos, level + 1, closing=True)
            self.path_keys[level + 1] = frame.keys
        if frame.start == self.rec_open:
            self.rec_close = pos
        if level == 0:
            self.top_end = pos
            self._nothing_after(self._block, pos + 1 - self.base)
        else:
            self.stack[level - 1].child_end = pos

    def _colon(self, pos: int, level: int) -> None:
        frame = self.stack[level - 1]
        if not frame.on_path:
            return
        if frame.kind != _OPEN_OBJECT or frame.colon >= 0:
            raise self._malformed(pos, "a ':' where a ',' or '}' belongs (a comma missing?)")
        key = self._key(frame.mark + 1, pos)
        if key in frame.keys:
            raise FileProblem(
                "delivery.duplicate_columns",
                f"{self.name}: the key {key[:100]!r} appears twice in the same object (byte "
                f"{pos:,}); which value to read would be a guess: deliver each key once",
            )
        frame.keys.append(key)
        frame.key, frame.colon, frame.child_end = key, pos, -1
        self.members += 1
        if self.members > MAX_WRAPPER_MEMBERS:
            raise FileProblem(
                "delivery.unreadable",
                f"{self.name}: the top-level JSON object has more than "
                f"{MAX_WRAPPER_MEMBERS:,} members; Flux reads records from an array of "
                "objects, each one a record",
            )

    def _comma(self, pos: int, level: int) -> None:
        frame = self.stack[level - 1]
        if frame.on_path and frame.kind == _OPEN_OBJECT:
            self._end_member(frame, pos, level, closing=False)
            frame.mark, frame.key, frame.colon, frame.child_end = pos, None, -1, -1

    def _end_member(self, frame: _Frame, pos: int, level: int, *, closing: bool) -> None:
        """Check the member (at ``level``) that ends at ``pos`` (a ',' or the '}')."""
        if frame.colon < 0:
            if closing and not frame.keys:  # {} or { }
                self._blank(frame.mark + 1, pos, "an empty object")
                return
            raise self._malformed(pos, "a member without a key and a ':'")
        if frame.child_end >= 0:
            self._blank(frame.child_end + 1, pos, "what follows a member's value")
            return
        value = self._scalar(frame.colon + 1, pos)
        on_path = bool(self.path) and level <= len(self.path) and frame.key == self.path[level - 1]
        if on_path and value is not None:
            self.path_scalar[level] = value

    # -- the records array ------------------------------------------------------------
    def _records(self, block: bytes, commas: np.ndarray) -> None:
        """Record sizes from the separators of the records array seen in this block."""
        assert self.rec_open is not None
        limit = self.limits.max_line_bytes
        commas = commas[commas > self.rec_open]
        close = self.rec_close
        closed_here = close is not None and close < self.base + len(block)
        if close is not None and closed_here:
            commas = commas[commas < close]
        bounds = np.append(commas, close) if close is not None and closed_here else commas
        if bounds.size:
            starts = np.concatenate(([self.rec_mark], bounds[:-1]))
            sizes = bounds - starts - 1
            over = np.flatnonzero(sizes > limit)
            if over.size:
                j = int(over[0])
                raise self._oversize(self.rec_count + j + 1, int(starts[j]), int(sizes[j]), True)
            if closed_here and not commas.size and self.rec_count == 0:
                ended = 0 if self._blank_span(self.rec_open + 1, int(bounds[-1])) else 1
            else:
                ended = int(bounds.size)
            self.rec_count += ended
            self.rec_mark = int(bounds[-1])
            self.rec_mark_block = (block, self.base, self.line_ends)
        if not closed_here:
            tail = self.base + len(block) - self.rec_mark - 1
            if tail > limit:
                raise self._oversize(self.rec_count + 1, self.rec_mark, tail, False)

    def _oversize(self, record: int, start: int, size: int, complete: bool) -> FileProblem:
        """The rejection of the record after the boundary at ``start`` (its '[' or ',')."""
        if start >= self.base:
            line = self._line(start)
        else:  # the record started in an earlier block, at the mark
            block, base, ends = self.rec_mark_block
            line = ends + block.count(b"\n", 0, start - base) + 1
        after = self._read(start + 1, start + 4097)  # the line the record's text starts on
        line += after[: len(after) - len(after.lstrip(_SPACE))].count(b"\n")
        said = (
            f"{size:,} bytes"
            if complete
            else f"at least {size:,} bytes (Flux stopped reading there)"
        )
        return FileProblem(
            "delivery.line_too_long",
            f"{self.name}: record {record} of the JSON array (from line {line}) is {said}, "
            f"more than the limit of {self.limits.max_line_bytes:,} bytes per record; Flux "
            "rejects the file without parsing it. A record this long is no table row: check "
            "for a value that holds a whole file; a larger limit is the Flux operator's "
            f"setting ({MAX_LINE_BYTES_ENV})",
        )

    # -- small reads -----------------------------------------------------------------------
    def _line(self, pos: int) -> int:
        """The 1-based line of ``pos``, which lies in the current block."""
        return self.line_ends + self._block.count(b"\n", 0, max(pos - self.base, 0)) + 1

    def _read(self, start: int, end: int) -> bytes:
        return os.pread(self.fd, end - start, start) if end > start else b""

    def _blank_span(self, start: int, end: int) -> bool:
        """Whether only whitespace lies in [start, end) (a long span is read in blocks)."""
        while start < end:
            piece = self._read(start, min(end, start + SCAN_BLOCK))
            if piece.strip(_SPACE):
                return False
            start += len(piece) or end
        return True

    def _blank(self, start: int, end: int, what: str) -> None:
        if not self._blank_span(start, end):
            raise self._malformed(start, f"unexpected text before or after {what}")

    def _nothing_after(self, block: bytes, offset: int) -> None:
        rest = block[max(offset, 0) :]
        if rest.strip(_SPACE):
            at = len(rest) - len(rest.lstrip(_SPACE))
            raise self._malformed(self.base + max(offset, 0) + at, "text after the JSON document")

    def _first_byte(self, pos: int) -> str:
        """The first character that is not whitespace from ``pos`` ('' if none nearby)."""
        piece = self._read(pos, min(pos + 4096, self.text.stat.st_size)).lstrip(_SPACE)
        return chr(piece[0]) if piece else ""

    def _key(self, start: int, end: int) -> str:
        if end - start > MAX_KEY_BYTES:
            raise self._malformed(start, f"a key longer than {MAX_KEY_BYTES:,} bytes")
        raw = self._read(start, end).strip(_SPACE)
        try:
            key = json.loads(raw)
        except ValueError:
            key = None
        if not isinstance(key, str):
            raise self._malformed(start, f"expected a key (a string), found {_shown(raw)}")
        return key

    def _scalar(self, start: int, end: int) -> str | None:
        """What a scalar member holds ('a number', ...), checked as JSON; None when it is
        too long to read (it is then not needed: only containers hold records)."""
        if end - start > MAX_KEY_BYTES:
            return None
        raw = self._read(start, end).strip(_SPACE)
        try:
            value = json.loads(raw)
        except ValueError:
            raise self._malformed(start, f"expected a value, found {_shown(raw)}") from None
        return _what(value)

    def _malformed(self, pos: int, what: str) -> FileProblem:
        line = self._line(pos) if self.base <= pos <= self.base + len(self._block) else None
        where = f"byte {pos:,}" + (f" (line {line})" if line else "")
        return FileProblem(
            "delivery.unreadable",
            f"{self.name}: the file cannot be parsed as json: {what} at {where}",
        )

    def _path_nowhere(self) -> FileProblem:
        dotted = ".".join(self.path)
        for level in range(1, len(self.path) + 1):
            key = self.path[level - 1]
            keys = self.path_keys.get(level)
            if keys is None:
                break
            if key not in keys:
                there = ", ".join(repr(k) for k in keys[:10]) or "none"
                more = f" and {len(keys) - 10} more" if len(keys) > 10 else ""
                return _mismatch(
                    f"{self.name}: the contract's jsonRecordsPath {dotted!r} leads nowhere: "
                    f"the object at {_at(self.path[: level - 1])} has no key {key!r} (its keys: "
                    f"{there}{more}); declare the path to the array of records"
                )
            if level in self.path_scalar:
                return _mismatch(
                    f"{self.name}: the contract's jsonRecordsPath {dotted!r} leads to "
                    f"{self.path_scalar[level]} under {key!r}, not to an array of records"
                )
        return _mismatch(
            f"{self.name}: the contract's jsonRecordsPath {dotted!r} leads to no array of records"
        )


def _kind(char: int) -> str:
    return "array" if char == _OPEN_ARRAY else "object"


def _at(keys: Sequence[str]) -> str:
    return "the top" if not keys else repr(".".join(keys))


def _shown(raw: bytes) -> str:
    text = raw[:40].decode("utf-8", "replace")
    return repr(text) + ("..." if len(raw) > 40 else "") if raw else "nothing"


def _what(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return "a number"
    return "a string"


def _mismatch(reason: str) -> FileProblem:
    return FileProblem("delivery.layout_mismatch", reason)


def _undeclared_wrapper(name: str, keys: list[str]) -> FileProblem:
    if len(keys) == 1:
        return _mismatch(
            f"{name}: the JSON document is an object, not an array of records: the records "
            f"seem to sit under {keys[0]!r}: declare customProperty jsonRecordsPath: "
            f"{keys[0]} in the contract (Flux never reads a wrapper as one row). If each "
            "document is one record whose fields hold arrays, declare customProperty "
            "jsonDocument: record instead"
        )
    listed = " or ".join(repr(k) for k in keys[:5])
    return _mismatch(
        f"{name}: the JSON document is an object, not an array of records: the records may "
        f"sit under {listed}: declare customProperty jsonRecordsPath: <key> in the contract "
        "(Flux never reads a wrapper as one row), or jsonDocument: record if each document "
        "is one record"
    )


def _top_value(text: Readable, name: str) -> tuple[int, int]:
    """The first character of the document and its offset (a UTF-8 BOM and whitespace
    before it skipped), or the rejection of a document that is no array or object."""
    offset = 0
    while offset < text.stat.st_size:
        piece = os.pread(text.fileno(), min(SCAN_BLOCK, text.stat.st_size - offset), offset)
        if offset == 0 and piece.startswith(_BOM):
            piece, offset = piece[len(_BOM) :], len(_BOM)
        stripped = piece.lstrip(_SPACE)
        if stripped:
            at = offset + len(piece) - len(stripped)
            first = stripped[0]
            if first in (_OPEN_ARRAY, _OPEN_OBJECT):
                return first, at
            shown = _shown(stripped.split(b"\n")[0])
            raise FileProblem(
                "delivery.unreadable",
                f"{name}: the JSON document is a single value ({shown}), not records: "
                "deliver an array of objects, one object per record",
            )
        offset += len(piece)
    raise FileProblem("delivery.empty_file", f"{name}: the file holds only whitespace")


def locate(
    text: Readable,
    *,
    path: tuple[str, ...],
    limits: SizeLimits,
    name: str,
    workdir: Path | None,
    one_record: bool = False,
) -> JsonRecords:
    """The records of a .json document (``LayoutScan``), with their keys; a wrapped array
    is copied out of its wrapper into ``workdir`` (None: the system's temporary folder).
    ``one_record`` (customProperty ``jsonDocument: record``): the document is one object,
    one record, whatever arrays of objects it holds."""
    top, start = _top_value(text, name)
    if top == _OPEN_ARRAY and one_record:
        raise _mismatch(
            f"{name}: the contract's jsonDocument: record says each .json document is one "
            "record (an object), but this document is an array; deliver one object per "
            "file, or drop jsonDocument from the contract if the agency now delivers arrays"
        )
    if top == _OPEN_ARRAY and path:
        raise _mismatch(
            f"{name}: the contract's jsonRecordsPath {'.'.join(path)!r} says the records sit "
            "in an object, but the JSON document is an array; drop jsonRecordsPath from the "
            "contract if the agency now delivers a plain array"
        )
    layout = LayoutScan(
        text, top=top, start=start, path=path, limits=limits, name=name, one_record=one_record
    ).run()
    records = JsonRecords(
        source=text.via,
        form="unstructured" if layout.single else "array",
        limits=limits,
        name=name,
        single_object=layout.single,
    )
    if not layout.single and layout.elements == 0:
        raise FileProblem("delivery.empty_file", f"{name}: the JSON array holds no records")
    try:
        if path:
            records.source = _cut(text, layout, workdir, records.staged, name=name)
        discover(records)
    except BaseException:
        for staged in records.staged:
            staged.close()
        raise
    return records


def _cut(
    text: Readable, layout: Layout, workdir: Path | None, staged: list[StagedText], *, name: str
) -> str:
    """Copy the records array out of its wrapper into the staging area, in the kernel; the
    path DuckDB reads the copy by."""
    copy = StagedText(workdir, ".json")
    staged.append(copy)
    offset, left = layout.start, layout.end - layout.start + 1
    while left > 0:
        try:
            done = os.copy_file_range(text.fileno(), copy.fileno(), left, offset)
        except OSError:  # not supported between these file systems: through user space
            done = os.write(copy.fileno(), os.pread(text.fileno(), min(left, SCAN_BLOCK), offset))
        if done <= 0:
            raise FileProblem(
                "delivery.changed_while_reading",
                f"{name}: the file ended before its records array did while Flux copied it",
            )
        offset, left = offset + done, left - done
    return copy.via


def open_lines(text: Readable, *, limits: SizeLimits, name: str) -> JsonRecords:
    """The records of a JSON Lines file (its lines were bounded by ``bound_sizes``)."""
    records = JsonRecords(source=text.via, form="newline_delimited", limits=limits, name=name)
    discover(records)
    return records


# -- DuckDB: keys, then the records as text ------------------------------------------------


def _connect() -> duckdb.DuckDBPyConnection:
    """A cursor on the process's one in-memory database for JSON reading: opening a
    database costs ~17 ms (a delivery of 5,000 one-record files spent 85 s doing it three
    times per file); a cursor costs next to nothing, and closing it leaves the database."""
    return _json_database().cursor()


@functools.cache
def _json_database() -> duckdb.DuckDBPyConnection:
    import duckdb  # step code: the definitions never import DuckDB

    conn = duckdb.connect()
    conn.execute("SET preserve_insertion_order = true")  # row numbers are file order
    return conn


def _read_json(records: JsonRecords, *, raw: bool) -> str:
    """A ``read_json`` call over the records: one JSON column (``raw``) or typed columns."""
    fixed = f"format = '{records.form}', maximum_object_size = {records.max_object}"
    if raw:
        return f"read_json(?, {fixed}, records = false, columns = {{'j': 'JSON'}})"
    return f"read_json(?, {fixed}, records = true, columns = ?)"


def discover(records: JsonRecords) -> None:
    """Every record's keys in one DuckDB pass: the file's columns in order of first
    appearance, and the rejection of a record that is no object or gives a key twice."""
    import duckdb

    sql = (
        "SELECT json_type(j) AS t, json_keys(j) AS ks, min(rn) AS first, count(*) AS n "
        f"FROM (SELECT row_number() OVER () AS rn, j FROM {_read_json(records, raw=True)}) "
        "GROUP BY ALL ORDER BY first"
    )
    with _connect() as conn:
        try:
            shapes = pl.from_arrow(conn.sql(sql, params=[records.source]).to_arrow_table())
        except duckdb.Error as exc:
            raise parse_problem(records, exc) from exc
    assert isinstance(shapes, pl.DataFrame)
    records.records = int(shapes.get_column("n").sum() or 0)
    odd = shapes.filter(pl.col("t") != "OBJECT")
    if odd.height:
        first = odd.row(0, named=True)
        raise FileProblem(
            "delivery.unreadable",
            f"{records.name}: record {first['first']} is {_json_kind(first['t'])}, "
            "not an object: every record must be an object of fields "
            f"({first['n']:,} record(s) are {_json_kind(first['t'])})",
        )
    doubled = shapes.filter(pl.col("ks").list.len() != pl.col("ks").list.unique().list.len())
    if doubled.height:
        first = doubled.row(0, named=True)
        key = next(k for k in first["ks"] if first["ks"].count(k) > 1)
        raise FileProblem(
            "delivery.duplicate_columns",
            f"{records.name}: record {first['first']} has the key {key[:100]!r} "
            "twice; which value to load would be a guess: deliver each key once per object",
        )
    keys = shapes.select(pl.col("ks").explode()).drop_nulls().unique(maintain_order=True)
    if keys.height > MAX_KEYS:
        raise FileProblem(
            "delivery.unreadable",
            f"{records.name}: the records hold {keys.height:,} distinct keys, more than the "
            f"{MAX_KEYS:,} columns Flux reads: keys that are values (dates, ids) make no "
            "table; deliver one key per column",
        )
    records.keys = tuple(keys.get_column("ks").to_list())
    reject_duplicates(list(records.headers))
    if records.keys:
        _reject_doubled_nested_keys(records)


_DOUBLED_KEY = re.compile(r'(?:in line|in record/value) (\d+): .*has duplicate key "(.*)"')


def _reject_doubled_nested_keys(records: JsonRecords) -> None:
    """An object in a value holding a key twice rejects the file, as a column given twice
    does: its text would be loaded with both, and a reader of it keeps one at random.

    DuckDB's JSON reader refuses such an object when it turns a value it detected as an
    object into a struct (a pass of ~0.4 s per 1M records); any other complaint is left to
    the read itself, whose verdicts are the rules.
    """
    import duckdb

    form = "auto" if records.form == "unstructured" else records.form
    try:
        with _connect() as conn:
            conn.execute(
                "SELECT count(*) FROM read_json(?, format = ?, records = true, "
                "maximum_object_size = ?) t WHERE to_json(t) IS NULL",
                [records.source, form, records.max_object],
            ).fetchall()
    except duckdb.Error as exc:
        found = _DOUBLED_KEY.search(str(exc))
        if found is None:
            return
        number = int(found.group(1)) - (1 if records.form == "array" else 0)
        raise FileProblem(
            "delivery.duplicate_columns",
            f"{records.name}: record {number} has the key "
            f"{found.group(2)[:100]!r} twice; which value to load would be a guess: deliver "
            "each key once per object",
        ) from exc


def read_batches(records: JsonRecords, chunk_rows: int) -> Iterator[pl.DataFrame]:
    """The records as frames of text columns (normalised names) and ``_row_number``, at
    most ``chunk_rows`` rows each, streamed by DuckDB; raises the FileProblem of a record
    that is not valid JSON."""
    import duckdb

    columns = dict.fromkeys(records.keys, "VARCHAR")
    names = dict(zip(records.keys, records.headers, strict=True))
    rows = 0
    with _connect() as conn:
        try:
            relation = conn.sql(
                f"SELECT * FROM {_read_json(records, raw=False)}",
                params=[records.source, columns],
            )
            for batch in relation.to_arrow_reader(chunk_rows):
                frame = pl.from_arrow(batch)
                assert isinstance(frame, pl.DataFrame)
                frame = frame.rename(names).with_row_index(ROW, offset=rows + 1)
                rows += frame.height
                yield frame.with_columns(pl.col(ROW).cast(pl.Int64)).select(ROW, *records.headers)
        except duckdb.Error as exc:
            raise parse_problem(records, exc) from exc


_MALFORMED = re.compile(r"at byte (\d+) in (line|record/value) (\d+): (.*?)\.?\s*$")


def parse_problem(records: JsonRecords, exc: Exception) -> FileProblem:
    """DuckDB's complaint as an agency reads it: the record (JSON Lines: its line), what is
    wrong, never DuckDB's file path or its advice on its own options.

    DuckDB numbers the values it parsed from 1 but counts one more than the records before
    the faulty one (the array itself, or a line's start), and skips blank lines: record
    ``N - 1``, which for JSON Lines is mapped back to its line in the file."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    found = _MALFORMED.search(text)
    if found is not None:
        offset, _, number, what = found.groups()
        record = max(int(number) - 1, 1)
        if records.form == "newline_delimited":
            where = f"line {_line_of_record(records.source, record)}"
        else:
            where = f"record {record}"
        return FileProblem(
            "delivery.unreadable",
            f"{records.name}: {where} is not valid JSON: {what} (at byte {int(offset):,} of it)",
        )
    text = re.sub(r"^[A-Za-z ]*Error: ", "", text)
    text = re.sub(r' in file "(?:[^"\\]|\\.)*",?', "", text)
    return FileProblem(
        "delivery.unreadable", f"{records.name}: the file cannot be parsed as json: {text}"
    )


def _line_of_record(source: str, record: int) -> int:
    """The 1-based line of a JSON Lines file holding its ``record``-th non-blank line (read
    again in blocks: only when a record is rejected)."""
    seen, line, rest = 0, 0, b""
    with open(source, "rb") as handle:
        while block := handle.read(SCAN_BLOCK):
            *lines, rest = (rest + block).split(b"\n")
            for text in lines:
                line += 1
                seen += bool(text.strip(_SPACE))
                if seen == record:
                    return line
    return line + 1


def _json_kind(kind: str | None) -> str:
    return {
        "ARRAY": "an array",
        "VARCHAR": "a string",
        "BOOLEAN": "a boolean",
        "NULL": "null",
        None: "null",
    }.get(kind, "a number")
