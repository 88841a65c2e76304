"""The byte-level pieces the readers share: file problems, staged copies, and the streaming
scans that bound a delivered file before any parser holds it.

Both ``readers.py`` (CSV, JSON Lines, Parquet, and driving every read) and
``json_records.py`` (where a .json file's records are) build on these, so they live below
both: a rejection (``FileProblem``), a file Flux writes and reads instead of the delivered
one (``StagedText``), and the numpy passes over ``SCAN_BLOCK`` blocks:

- ``RecordScan``: record and field lengths against ``SizeLimits`` (``Oversize``), and the
  fields per CSV record, so a short record is found on the bytes;
- ``NestingScan``: how deep JSON text nests arrays and objects (``TooDeep`` past
  ``MAX_JSON_DEPTH``), which ``json_records.LayoutScan`` extends to find the records;
- the rejections an agency reads for each (``oversize_problem``, ``too_deep_problem``).
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from flux_pipelines.contracts.model import MAX_FIELD_BYTES_ENV, MAX_LINE_BYTES_ENV, SizeLimits
from flux_pipelines.contracts.validator import DELIVERED_FIELDS, EXPECTED_FIELDS
from flux_pipelines.ingest.confine import PROC_FD
from flux_pipelines.names import ROW

# The size pass reads this much at a time. Its vectors hold up to 8 bytes per byte read (a
# block of nothing but commas), so 1 MiB keeps it under ~25 MB, and it is as fast as 8 MiB
# (55 ms for 79 MB, measured; 8 MiB blocks: 66 ms, 190 MB on that worst case).
SCAN_BLOCK = 1 << 20
# The bytes the scans look for (numpy compares a block's uint8 view with them).
QUOTE, COMMA, LF, CR = ord('"'), ord(","), ord("\n"), ord("\r")
_BACKSLASH = ord("\\")
# '[' and '{' (0x5B, 0x7B) both read 0x7B with bit 0x20 set, ']' and '}' both 0x7D: two
# comparisons find every bracket (a 256-entry lookup table is ~8x slower in numpy).
FOLD, OPENS, CLOSES = 0x20, ord("{"), ord("}")
# Up to this many quotes in a block, commas inside quotes are counted span by span
# (``_quoted_commas``); past it, one vector pass locates every comma (cheaper then).
QUOTED_SPANS_COUNTED = 4096
# No positions: what a vector pass returns for a block holding none of what it looks for.
NONE = np.empty(0, dtype=np.intp)
# How deep a JSON document (a .json file, or one line of JSON Lines) may nest arrays and
# objects, counting its outermost one. Reading a nested value costs far more than its size
# (polars types it level by level, then it is turned into JSON text): a 1.2 KB value 300 deep
# took 1 s and 450 MB, and 8 MiB of values 32 deep took 50 s (64 deep: 310 s). A table's
# values need a few levels: [ {record} ] plus an object or list in a cell is 3 or 4.
MAX_JSON_DEPTH = 16


class FileProblem(Exception):
    """A whole file cannot be read; carries the rule id and an actionable reason."""

    def __init__(self, rule_id: str, reason: str) -> None:
        super().__init__(reason)
        self.rule_id = rule_id
        self.reason = reason


class StagedText:
    """A file Flux writes into the staging area and reads instead of the delivered one (the
    delivered text transcoded to UTF-8, a JSON records array cut out of its wrapper).

    Read, like a delivered file, through its descriptor (``via``: never a glob pattern,
    whatever the staging folder's name); deleted by ``close``."""

    def __init__(self, workdir: Path | None, suffix: str) -> None:
        self.fd, name = tempfile.mkstemp(prefix=".flux-", suffix=suffix, dir=workdir)
        self.path = Path(name)
        self.via = f"/proc/self/fd/{self.fd}" if PROC_FD else name

    @property
    def stat(self) -> os.stat_result:
        return os.fstat(self.fd)

    def fileno(self) -> int:
        return self.fd

    def head(self, size: int) -> bytes:
        return os.pread(self.fd, size, 0)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> StagedText:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def reject_duplicates(headers: Sequence[str]) -> None:
    """Reject a file whose normalised column names repeat: its columns would be ambiguous."""
    duplicates = sorted(h for h, n in Counter(headers).items() if n > 1)
    if duplicates:
        raise FileProblem(
            "delivery.duplicate_columns",
            f"columns {duplicates} appear more than once (after normalising header spelling)",
        )


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

    def __init__(
        self,
        limits: SizeLimits,
        *,
        eol: int = LF,
        csv: bool = True,
        start: int = 0,
        line: int = 1,
        exact_fields: bool = False,
    ) -> None:
        self.max_line = limits.max_line_bytes
        self.max_field = limits.max_field_bytes if csv else None  # JSON: checked as read
        self.eol = eol
        self.csv = csv
        self.base = start  # file offset of the next block (``start``: the first one's)
        self.parity = 0  # 1 while inside a quoted field
        self.record_start = start  # file offset of the open record
        self.record_line = line  # the physical line it starts on
        self.records = 0  # records ended so far
        self.lines = line - 1  # line ends seen so far
        self.field_start = start  # file offset of the open field
        self.field_index = 0  # its position in the open record
        self.longest = 0  # the longest record ended so far
        # CSV records with fewer fields than the header (see ``short``), counted here so
        # that no second pass over the file is needed: separators outside quotes per record
        # Cheap by default: the total of separators outside quotes (a vector count, minus
        # those inside quoted spans: ``_quoted_commas``); only when the total says a record
        # is short are they counted per record, in a second pass (``exact_fields``).
        self.exact_fields = exact_fields
        self.header_fields: int | None = None
        self.commas = 0  # separators outside quotes after the header, in total
        self.open_commas = 0  # separators of the open record so far (exact mode)
        self.short_records: list[np.ndarray] = []  # (record index, fields) pairs

    def feed(self, block: bytes) -> Oversize | None:
        """Account for the next block; the first record or field over a limit, if any."""
        data = np.frombuffer(block, dtype=np.uint8)
        eols = np.flatnonzero(data == self.eol)
        # ``in`` is a C scan: most blocks hold no quote and skip the vector pass for one
        quotes = np.flatnonzero(data == QUOTE) if self.csv and b'"' in block else NONE
        parity = self.parity
        if quotes.size:
            ends = eols[_outside(quotes, eols, parity)]
        else:
            ends = eols if parity == 0 else NONE
        # Block coordinates: the first record may have started in an earlier block (< 0).
        first = self.record_start - self.base
        starts = np.concatenate(([first], ends[:-1] + 1)) if ends.size else NONE
        lengths = ends - starts
        tail_start = int(ends[-1]) + 1 if ends.size else first
        tail = data.size - tail_start  # the open record so far
        longest = int(lengths.max()) if lengths.size else 0
        found = self._record_over(eols, ends, starts, lengths, tail)
        if self.csv and self.exact_fields:
            self._count_fields(data, quotes, parity, ends)
        elif self.csv:
            self._count_total(data, quotes, parity, ends)
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

    def _count_total(
        self, data: np.ndarray, quotes: np.ndarray, parity: int, ends: np.ndarray
    ) -> None:
        """Separators outside quotes in this block, in total (the header's on their own)."""
        if quotes.size <= QUOTED_SPANS_COUNTED:
            commas = data == COMMA
            total = int(np.count_nonzero(commas))
            if quotes.size or parity:
                total -= _quoted_commas(commas, quotes, parity)
        else:
            total = int(self._outside_commas(data, quotes, parity).size)
        if self.header_fields is None and ends.size and self.records == 0:
            header = self._outside_commas(data[: int(ends[0])], quotes, parity)
            self.header_fields = int(header.size) + 1
            total -= int(header.size)
        self.commas += total

    @staticmethod
    def _outside_commas(data: np.ndarray, quotes: np.ndarray, parity: int) -> np.ndarray:
        commas = np.flatnonzero(data == COMMA)
        if commas.size and quotes.size:
            outside: np.ndarray = commas[_outside(quotes, commas, parity)]
            return outside
        return NONE if parity == 1 else commas  # parity 1: the block is inside quotes

    def may_be_short(self) -> bool:
        """After the last block (default mode): whether the separators outside quotes fall
        short of one fewer than the header's fields per record. polars rejects a record with
        more fields than the header, so an exact total proves no record is short."""
        records = self.records + (1 if self.base > self.record_start else 0)
        expected = max(records - 1, 0) * ((self.header_fields or 1) - 1)
        return self.commas != expected

    def _count_fields(
        self, data: np.ndarray, quotes: np.ndarray, parity: int, ends: np.ndarray
    ) -> None:
        """Separators outside quotes per record ended in this block; the short ones kept."""
        commas = self._outside_commas(data, quotes, parity)
        counts = np.bincount(np.searchsorted(ends, commas), minlength=ends.size + 1)
        counts[0] += self.open_commas
        self.open_commas = int(counts[ends.size])
        closed = counts[: ends.size] + 1  # fields of each record ended here
        first = self.records  # the global index of this block's first record (0: header)
        if self.header_fields is None and closed.size:
            self.header_fields = int(closed[0])
        self._keep_short(first, closed)

    def _keep_short(self, first: int, fields: np.ndarray) -> None:
        if self.header_fields is None or not fields.size:
            return
        index = np.arange(first, first + fields.size)
        short = (fields < self.header_fields) & (index > 0)
        if short.any():
            self.short_records.append(np.stack([index[short], fields[short]], axis=1))

    def short(self) -> tuple[int, pl.DataFrame | None]:
        """After the last block: (data records, the records short of fields as ROW /
        DELIVERED_FIELDS / EXPECTED_FIELDS, or None; in the default mode, None means none
        may be short). A record spans lines inside quotes; the open record at the end of
        the file counts when it holds anything."""
        records = self.records
        if self.base > self.record_start:  # bytes after the last line end: one more record
            if self.exact_fields:
                self._keep_short(records, np.array([self.open_commas + 1]))
            records += 1
        data = max(records - 1, 0)
        if not self.short_records:
            return data, None
        pairs = np.concatenate(self.short_records)
        frame = pl.DataFrame(
            {
                ROW: pairs[:, 0].astype(np.int64),
                DELIVERED_FIELDS: pairs[:, 1].astype(np.int64),
                EXPECTED_FIELDS: np.full(len(pairs), self.header_fields or 1, dtype=np.int64),
            }
        )
        return data, frame

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
        commas = np.flatnonzero(data[lo:] == COMMA) + lo
        if quotes.size:
            outside: np.ndarray = commas[_outside(quotes, commas, parity)]
            return outside
        return commas if parity == 0 else NONE

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
        starts = np.concatenate(([first], seps[:-1] + 1)) if seps.size else NONE
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


def _quoted_commas(commas: np.ndarray, quotes: np.ndarray, parity: int) -> int:
    """How many of a block's commas (``commas``: True at each) lie inside quotes, counted
    span by span between its quotes, the spans at odd positions once ``parity`` is added.
    Why: with few quotes in a block (most delivered CSV) this is a few vector counts instead
    of locating every comma (which took 72% of the size pass on the benchmark file)."""
    bounds = [0, *quotes.tolist(), commas.size]
    return sum(
        int(np.count_nonzero(commas[bounds[k] : bounds[k + 1]]))
        for k in range(1 - parity, len(bounds) - 1, 2)
    )


def _outside(quotes: np.ndarray, positions: np.ndarray, parity: int) -> np.ndarray:
    """True where a position is outside quotes: an even number of quotes before it."""
    even: np.ndarray = ((np.searchsorted(quotes, positions) + parity) & 1) == 0
    return even


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
        quotes = np.flatnonzero(data == QUOTE) if b'"' in block else NONE
        if self.escaped or b"\\" in block:  # ``in`` is a C scan: most blocks hold none
            quotes = self._unescaped(data, quotes)
        eols = np.flatnonzero(data == LF) if self.lines and b"\n" in block else NONE
        folded = data | FOLD
        brackets = np.flatnonzero((folded == OPENS) | (folded == CLOSES))
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
        levels = np.cumsum(np.where(folded[brackets] == OPENS, 1, -1))
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
        escaped = NONE
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
        hits = escaped[data[escaped] == QUOTE]  # the escaped quotes, each one of ``quotes``
        return np.delete(quotes, np.searchsorted(quotes, hits)) if hits.size else quotes


def too_deep_problem(found: TooDeep, *, fmt: str, name: str) -> FileProblem:
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


def oversize_problem(
    found: Oversize, *, fmt: str, name: str, headers: Sequence[str], limits: SizeLimits
) -> FileProblem:
    """The rejection an agency reads: the file, where, the size found and the limit."""
    if fmt == "jsonl":
        where = f"line {found.line}"
    elif found.record == 0:
        where = f"the header record (line {found.line})"
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
