"""An append-only, hash-chained audit trail of what Flux received, loaded, quarantined and
published, and of every human override: the answer to "what happened to agency A's
delivery of day D, and who decided what", checkable rather than merely logged.

Layout under the Flux home:

    audit/trail.jsonl          one record per line, canonical JSON; each names the previous hash
    audit/head.json            the anchor beside the trail: seq and hash of the latest record
    audit/trail.lock           flock'd by writers, so parallel runs (one per agency) keep one chain
    audit/trail.torn-*         bytes of a torn last line (a writer killed mid-write), moved aside
    state/audit_anchor.json    the second anchor, outside audit/: the same {seq, hash}

A record's ``hash`` is the SHA-256 of its canonical JSON without the ``hash`` key (sorted
keys, no spaces, UTF-8); ``prev_hash`` is the previous record's hash (64 zeros for seq 1).
``verify()`` therefore finds any edited field (the record's own hash breaks), a removed,
inserted or reordered record (seq and ``prev_hash`` stop linking), and, thanks to the
anchors, a tail cut off the end, which a chain alone cannot reveal.

Why a second anchor, and why a plain file: ``head.json`` sits in the folder it guards, so
whoever deletes the trail's last records can delete or rewrite it too, and a cut tail looked
like a trail that never had an anchor. ``state/audit_anchor.json`` is replaced atomically
(temp file, fsync, rename) after every append under the writers' lock, so it never runs
ahead of the trail: a trail shorter than it, or whose record at its seq hashes differently,
is a finding, and so is its absence while the trail holds records (the first append writes
it, at seq 0, before the trail exists, so no crash leaves records without it). A file keeps
the check where every writer already is (the step's thread, ``flux quality override``,
``flux audit verify``) with no Dagster instance or database to reach, and ``state/`` can be
given other permissions than ``audit/``, or be a link to another volume.

What it does NOT prove: the hashes carry no secret. Whoever can write both anchors as well
as the trail can rewrite history and recompute a perfectly valid chain, or append records
Flux never wrote (a trail longer than its anchors is only a notice: that is also what a
crash between the trail's fsync and the anchors' rename leaves). The anchors turn silent
edits into edits that need intent, knowledge and write access outside ``audit/``. To make
even those detectable, get the head out of the host's reach: publish its hash (a daily
report, a write-once bucket with object lock, an RFC 3161 timestamping service) and compare
with it, or sign it with a key the pipeline host does not hold.

Appends never repair tampering: when the end of the trail disagrees with an anchor,
``append`` raises ``AuditAnchorMismatch`` instead of writing a new anchor over the evidence,
and ``require_intact`` (the ingest step's first call) raises it before a load commits, so no
data is published without its records. ``flux audit anchor`` re-anchors, a human decision.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias, get_args

from flux_pipelines.errors import AuditAnchorMismatch, AuditTrailCorrupt
from flux_pipelines.files import fsync_path, write_atomic
from flux_pipelines.home import resolve_home
from flux_pipelines.locks import exclusive_lock

log = logging.getLogger(__name__)

RecordKind = Literal[
    "contract_version",
    "delivery",
    "load",
    "quarantine",
    "publication",
    "override",
    "report",
    "access",
    "purge",
]
RECORD_KINDS: tuple[str, ...] = get_args(RecordKind)
ProblemKind = Literal[
    "edited", "removed", "inserted", "reordered", "malformed", "truncated", "rewritten",
    "unanchored",
]  # fmt: skip
NoticeKind = Literal["torn", "no_anchor", "anchor_behind"]
JSONValue: TypeAlias = str | int | float | bool | list["JSONValue"] | dict[str, "JSONValue"] | None

GENESIS_HASH = "0" * 64
COMMON_FIELDS = ("agency", "dataset", "day", "run_id")
RECORD_FIELDS = frozenset({"seq", "ts", "kind", "payload", "prev_hash", "hash", *COMMON_FIELDS})
_CHUNK = 8192
_HEX64 = re.compile(r"[0-9a-f]{64}")
HEAD_LABEL = "head.json"
STATE_ANCHOR = Path("state") / "audit_anchor.json"  # under the home, outside audit/
STATE_LABEL = str(STATE_ANCHOR)


# --- records -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditRecord:
    """What a caller appends; the trail adds seq, ts and the two hashes."""

    kind: RecordKind
    payload: dict[str, JSONValue] = field(default_factory=dict)
    agency: str | None = None
    dataset: str | None = None
    day: str | None = None
    run_id: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in RECORD_KINDS:
            raise ValueError(f"audit record kind {self.kind!r} is not one of {RECORD_KINDS}")
        if not isinstance(self.payload, dict):
            raise TypeError(f"audit payload must be a dict, not {type(self.payload).__name__}")
        if self.day is not None:
            _check_day(self.day)


@dataclass(frozen=True)
class TrailEntry:
    """One record as stored in (and read back from) the trail."""

    seq: int
    ts: str
    kind: str
    payload: dict[str, JSONValue]
    prev_hash: str
    hash: str
    agency: str | None = None
    dataset: str | None = None
    day: str | None = None
    run_id: str | None = None

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> TrailEntry:
        """A record whose fields are ``RECORD_FIELDS`` (the caller checked them)."""
        return cls(
            seq=obj["seq"], ts=obj["ts"], kind=obj["kind"], payload=obj["payload"],
            prev_hash=obj["prev_hash"], hash=obj["hash"], agency=obj["agency"],
            dataset=obj["dataset"], day=obj["day"], run_id=obj["run_id"],
        )  # fmt: skip

    def to_dict(self) -> dict[str, JSONValue]:
        return {k: getattr(self, k) for k in sorted(RECORD_FIELDS)}


@dataclass(frozen=True)
class Anchor:
    """The latest record's seq and hash, kept beside the trail to expose a cut tail."""

    seq: int
    hash: str


def _check_day(day: str) -> str:
    try:
        dt.date.fromisoformat(day)
    except ValueError:
        raise ValueError(f"audit day {day!r} is not YYYY-MM-DD") from None
    return day


def _day(day: dt.date | str) -> str:
    return day.isoformat() if isinstance(day, dt.date) else _check_day(day)


def contract_version_record(dataset: str, version: str, sha256: str) -> AuditRecord:
    """A contract version seen or registered, pinned by the hash of its file."""
    return AuditRecord("contract_version", {"version": version, "sha256": sha256}, dataset=dataset)


def delivery_record(
    agency: str, dataset: str, day: dt.date | str, *, file: str, sha256: str, size: int,
    run_id: str | None = None,
) -> AuditRecord:  # fmt: skip
    """A file received in the landing zone, pinned by its hash and size."""
    payload: dict[str, JSONValue] = {"file": file, "sha256": sha256, "size": size}
    return AuditRecord("delivery", payload, agency, dataset, _day(day), run_id)


def load_record(
    agency: str, dataset: str, day: dt.date | str, *, run_id: str, rows_read: int,
    rows_curated: int, rows_quarantined: int, contract_version: str,
) -> AuditRecord:  # fmt: skip
    """A partition loaded by a run: its row counts and the contract version applied."""
    payload: dict[str, JSONValue] = {
        "rows_read": rows_read,
        "rows_curated": rows_curated,
        "rows_quarantined": rows_quarantined,
        "contract_version": contract_version,
    }
    return AuditRecord("load", payload, agency, dataset, _day(day), run_id)


def quarantine_record(
    agency: str, dataset: str, day: dt.date | str, *, file: str, rule_id: str, rows: int,
    run_id: str | None = None,
) -> AuditRecord:  # fmt: skip
    """Rows of a file put aside under one rule."""
    payload: dict[str, JSONValue] = {"file": file, "rule_id": rule_id, "rows": rows}
    return AuditRecord("quarantine", payload, agency, dataset, _day(day), run_id)


def publication_record(
    agency: str, dataset: str, day: dt.date | str, *, target: str, rows: int,
    sha256: str | None = None, run_id: str | None = None,
) -> AuditRecord:  # fmt: skip
    """A published copy analysts read, pinned by its hash when the caller has it."""
    payload: dict[str, JSONValue] = {"target": target, "rows": rows, "sha256": sha256}
    return AuditRecord("publication", payload, agency, dataset, _day(day), run_id)


def override_record(
    who: str, reason: str, *, agency: str, dataset: str, day: dt.date | str, overrides: str,
) -> AuditRecord:  # fmt: skip
    """A human decision to set a check or finding aside: who, why, and what exactly."""
    payload: dict[str, JSONValue] = {"who": who, "reason": reason, "overrides": overrides}
    return AuditRecord("override", payload, agency, dataset, _day(day))


def report_record(
    paths: list[str], *, agency: str | None = None, day: dt.date | str | None = None
) -> AuditRecord:
    """Agency reports written (their paths)."""
    payload: dict[str, JSONValue] = {"paths": list(paths)}
    return AuditRecord("report", payload, agency, day=None if day is None else _day(day))


def access_record(
    identity: dict[str, JSONValue], action: str, outcome: str, *, agency: str | None = None,
    dataset: str | None = None, day: dt.date | str | None = None,
    detail: dict[str, JSONValue] | None = None,
) -> AuditRecord:  # fmt: skip
    """An authenticated access (an upload, a report download, a published read, an override,
    a role change): who (``Identity.audit_fields()``), what, and whether it was allowed."""
    payload: dict[str, JSONValue] = {
        "identity": identity,
        "action": action,
        "outcome": outcome,
        **(detail or {}),
    }
    return AuditRecord("access", payload, agency, dataset, None if day is None else _day(day))


# --- hashing -------------------------------------------------------------------------------


def canonical_json(obj: dict[str, Any]) -> bytes:
    """The one byte form a record is hashed (and stored) in."""
    text = json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode("utf-8")


def record_hash(obj: dict[str, Any]) -> str:
    """SHA-256 of the record's canonical JSON without its own ``hash`` key."""
    return hashlib.sha256(canonical_json({k: v for k, v in obj.items() if k != "hash"})).hexdigest()


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Two values for one key would let a reader and the verifier see different records."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key")
    return obj


def _parse(raw: bytes) -> dict[str, Any] | None:
    """A line as a record dict with an int seq and a str hash, or None when it is not one."""
    try:
        obj = json.loads(raw, object_pairs_hook=_reject_duplicate_keys)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError, duplicate keys
        return None
    if not isinstance(obj, dict):
        return None
    seq, stored = obj.get("seq"), obj.get("hash")
    if not isinstance(seq, int) or isinstance(seq, bool) or not isinstance(stored, str):
        return None
    return obj


def _is_hex64(value: Any) -> bool:
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def _shape_error(obj: dict[str, Any]) -> str | None:
    """Why a record whose hash matches still is not one Flux writes, or None."""
    if set(obj) != RECORD_FIELDS:
        return f"fields {sorted(set(obj) ^ RECORD_FIELDS)} missing or unexpected"
    if obj["kind"] not in RECORD_KINDS:
        return f"unknown kind {obj['kind']!r}"
    if not isinstance(obj["payload"], dict) or not isinstance(obj["ts"], str):
        return "payload must be an object and ts a string"
    if not _is_hex64(obj["prev_hash"]):
        return "prev_hash is not 64 hex digits"
    if any(obj[k] is not None and not isinstance(obj[k], str) for k in COMMON_FIELDS):
        return f"{'/'.join(COMMON_FIELDS)} must be strings or null"
    return None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


# --- low-level file helpers ----------------------------------------------------------------


def _rfind_newline(fd: int, before: int) -> int:
    """Offset of the last newline before ``before``, reading backwards in small chunks."""
    pos = before
    while pos > 0:
        start = max(0, pos - _CHUNK)
        i = os.pread(fd, pos - start, start).rfind(b"\n")
        if i >= 0:
            return start + i
        pos = start
    return -1


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@dataclass(frozen=True)
class _Tail:
    """The last complete record (None: empty trail) and where the good bytes end."""

    last: dict[str, Any] | None
    good_end: int
    size: int


def _read_tail(fd: int, path: Path) -> _Tail:
    """Find the last complete record without reading the whole file.

    Bytes after the last newline are torn; so is a last newline-terminated line that does not
    parse (garbage left by a crash). Two unparsable lines at the end are not a torn write.
    """
    size = os.fstat(fd).st_size
    end = _rfind_newline(fd, size) + 1
    obj, start = _line_before(fd, end)
    if obj is None and end:
        end = start
        obj, start = _line_before(fd, end)
        if obj is None and end:
            raise AuditTrailCorrupt(
                str(path), f"its last two lines (before byte {end}) are garbage"
            )
    return _Tail(obj, end, size)


def _line_before(fd: int, end: int) -> tuple[dict[str, Any] | None, int]:
    """The record on the line ending just before offset ``end`` (None if none), its start."""
    if end == 0:
        return None, 0
    start = _rfind_newline(fd, end - 1) + 1
    return _parse(os.pread(fd, end - 1 - start, start)), start


# --- the trail -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _AnchorRead:
    """One anchor as a check found it: what it says, or why it could not be read."""

    label: str
    anchor: Anchor | None
    error: str | None = None
    required: bool = False  # missing while the trail holds records: a finding, not a notice
    both: bool = False  # head.json and the second anchor agree: checked once, named together

    @property
    def says(self) -> str:
        return f"{self.label} both anchor" if self.both else f"{self.label} anchors"


def _record_before(fd: int, end: int, seq: int) -> dict[str, Any] | None:
    """The record numbered ``seq``, reading lines backwards from byte ``end``.

    Costs the records after it (none when the anchor is current); None when it is not there.
    """
    while end > 0:
        obj, start = _line_before(fd, end)
        if obj is not None and obj["seq"] <= seq:
            return obj if obj["seq"] == seq else None
        end = start
    return None


def _stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")


class AuditTrail:
    """The audit trail of one FLUX_HOME; safe to append from several processes at once."""

    def __init__(self, home: Path | str) -> None:
        self.home = Path(home)
        self.dir = self.home / "audit"
        self.path = self.dir / "trail.jsonl"
        self.anchor_path = self.dir / "head.json"
        self.state_anchor_path = self.home / STATE_ANCHOR
        self.lock_path = self.dir / "trail.lock"

    def __repr__(self) -> str:
        return f"AuditTrail({str(self.path)!r})"

    def exists(self) -> bool:
        return self.path.exists()

    def anchored(self) -> bool:
        """Whether either anchor exists (a trail deleted under its anchors is a finding)."""
        return self.anchor_path.exists() or self.state_anchor_path.exists()

    # writing

    def append(self, record: AuditRecord) -> TrailEntry:
        """Append one record (one lock, one write, one fsync)."""
        return self.append_many([record])[0]

    def append_many(self, records: Iterable[AuditRecord]) -> list[TrailEntry]:
        """Append several records under one lock with one write and one fsync.

        Raises AuditAnchorMismatch, writing nothing, when the trail's end disagrees with an
        anchor (cut tail, rewritten record) or the anchor outside audit/ is missing.
        """
        batch = list(records)
        if not batch:
            return []
        with self._locked():
            if not self.path.exists():  # refuse a trail deleted under its anchors, not recreate it
                self._check_tail(
                    -1, _Tail(None, 0, 0), self.read_anchor(), self.read_state_anchor()
                )
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                return self._append_locked(fd, batch)
            finally:
                os.close(fd)

    def _append_locked(self, fd: int, batch: list[AuditRecord]) -> list[TrailEntry]:
        tail = _read_tail(fd, self.path)
        seq, prev = (tail.last["seq"], tail.last["hash"]) if tail.last else (0, GENESIS_HASH)
        head, state = self.read_anchor(), self.read_state_anchor()
        self._check_tail(fd, tail, head, state)
        entries, lines = _chain(batch, seq, prev)  # serialisation errors raise before writing
        if state is None:  # a new trail (_check_tail refuses records without it): seq 0 first
            self._write_anchor(self.state_anchor_path, Anchor(0, GENESIS_HASH))
        if tail.good_end < tail.size:
            self._move_torn_aside(fd, tail)
        _write_all(fd, b"".join(lines))
        os.fsync(fd)
        if tail.good_end == 0:
            fsync_path(self.dir)  # a new file: make its directory entry durable too
        end = Anchor(entries[-1].seq, entries[-1].hash)
        self._write_anchor(self.anchor_path, end)
        self._write_anchor(self.state_anchor_path, end)  # last: it never runs ahead
        return entries

    def _check_tail(self, fd: int, tail: _Tail, head: Anchor | None, state: Anchor | None) -> None:
        problem = self._tail_problem(fd, tail, head, state)
        if problem is not None:
            raise AuditAnchorMismatch(str(self.path), problem, home=str(self.home))

    def _tail_problem(
        self, fd: int, tail: _Tail, head: Anchor | None, state: Anchor | None
    ) -> str | None:
        """Why the trail's end disagrees with an anchor, or None (reads the tail only)."""
        seq = tail.last["seq"] if tail.last else 0
        if state is None and seq > 0:
            return (
                f"it ends at seq {seq} but {self.state_anchor_path} (the anchor outside audit/) "
                "is missing: it was removed, or the trail is older than it"
            )
        for label, anchor in ((HEAD_LABEL, head), (STATE_LABEL, state)):
            if anchor is None:
                continue
            if anchor.seq == 0:  # written before a new trail's first record
                if anchor.hash != GENESIS_HASH:
                    return f"{label} anchors seq 0 with a hash other than the genesis hash"
                continue
            if seq < anchor.seq:
                return f"it ends at seq {seq} but {label} anchors seq {anchor.seq}"
            record = _record_before(fd, tail.good_end, anchor.seq)
            if record is None:
                return f"its record seq {anchor.seq}, which {label} anchors, is missing"
            if record["hash"] != anchor.hash:
                return f"its record seq {anchor.seq} is not the one {label} anchors"
        return None

    def _move_torn_aside(self, fd: int, tail: _Tail) -> None:
        """Keep the torn bytes for inspection, then cut the trail back to its last full line."""
        torn = os.pread(fd, tail.size - tail.good_end, tail.good_end)
        aside = self.dir / f"trail.torn-{_stamp()}"
        out = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            _write_all(out, torn)
            os.fsync(out)
        finally:
            os.close(out)
        os.ftruncate(fd, tail.good_end)
        os.fsync(fd)
        log.warning(
            "audit trail %s: moved a torn last line (%d bytes) to %s", self.path, len(torn), aside
        )

    def _write_anchor(self, path: Path, anchor: Anchor) -> None:
        """Replace an anchor atomically; a new one's directory entry is made durable too."""
        # durable: a crash never leaves an empty anchor, nor loses a new one's name (a lost
        # rename over an old one only leaves the older anchor: a lag, not a finding)
        body = canonical_json({"seq": anchor.seq, "hash": anchor.hash}) + b"\n"
        write_atomic(path, body, durable=True, mode=0o644)

    def anchor_at_end(self) -> Anchor:
        """Point both anchors at the trail's last record; replaced anchors are kept beside
        as ``*.replaced-<UTC stamp>``. A human decision (``flux audit anchor``): for a trail
        older than the second anchor, or after a finding was understood and accepted."""
        with self._locked(), self._tail() as (_, tail):
            end = Anchor(tail.last["seq"], tail.last["hash"]) if tail.last else None
            end = end or Anchor(0, GENESIS_HASH)
            stamp = _stamp()
            for path in (self.anchor_path, self.state_anchor_path):
                if path.exists():
                    os.replace(path, path.with_name(f"{path.name}.replaced-{stamp}"))
                self._write_anchor(path, end)
            return end

    def _locked(self) -> AbstractContextManager[None]:
        """flock a sibling file (never the trail: the trail is truncated when torn)."""
        return exclusive_lock(self.lock_path, mode=0o644)

    def writers_locked(self) -> AbstractContextManager[None]:
        """The writers' lock, for a reader that must see the trail and both anchors agree
        while it copies them (a backup); nothing is appended while it is held."""
        return self._locked()

    @contextmanager
    def _shared(self) -> Iterator[None]:
        """A shared lock, so readers see the trail and anchors as one writer left them
        (read-only: creates nothing when no writer ever ran here)."""
        try:
            fd: int | None = os.open(self.lock_path, os.O_RDONLY)
        except FileNotFoundError:
            fd = None
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            if fd is not None:
                os.close(fd)

    @contextmanager
    def _tail(self) -> Iterator[tuple[int, _Tail]]:
        """The trail open read-only with its tail; (-1, empty) when there is no trail."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            fd = -1
        try:
            yield fd, (_Tail(None, 0, 0) if fd < 0 else _read_tail(fd, self.path))
        finally:
            if fd >= 0:
                os.close(fd)

    # reading

    def read_anchor(self) -> Anchor | None:
        """head.json, None when there is none; AuditAnchorMismatch when it is unreadable."""
        return self._read_anchor_file(self.anchor_path)

    def read_state_anchor(self) -> Anchor | None:
        """The anchor outside audit/, None when there is none; AuditAnchorMismatch when it is
        unreadable."""
        return self._read_anchor_file(self.state_anchor_path)

    def _read_anchor_file(self, path: Path) -> Anchor | None:
        try:
            obj = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError:
            raise AuditAnchorMismatch(str(path), "not JSON", home=str(self.home)) from None
        if (
            not isinstance(obj, dict)
            or not isinstance(obj.get("seq"), int)
            or isinstance(obj.get("seq"), bool)
            or obj["seq"] < 0
            or not _is_hex64(obj.get("hash"))
        ):
            raise AuditAnchorMismatch(str(path), "not {seq, hash}", home=str(self.home))
        return Anchor(obj["seq"], obj["hash"])

    def require_intact(self) -> None:
        """Raise AuditAnchorMismatch unless the trail's end agrees with both anchors.

        The ingest step's first call: a trail whose appends would be refused stops the load
        before it commits, not after it published. It reads the anchors and the records
        after the older one (normally the last line only), never the whole trail; records
        edited in the middle do not block appends and are left to verify().
        """
        with self._shared(), self._tail() as (fd, tail):
            self._check_tail(fd, tail, self.read_anchor(), self.read_state_anchor())

    def iter_records(
        self,
        *,
        kind: str | None = None,
        agency: str | None = None,
        dataset: str | None = None,
        day: dt.date | str | None = None,
    ) -> Iterator[TrailEntry]:
        """Stream records matching every filter given, oldest first.

        Reading does not verify: lines that are not records are skipped; use verify().
        """
        want = {"kind": kind, "agency": agency, "dataset": dataset}
        want["day"] = None if day is None else _day(day)
        want = {k: v for k, v in want.items() if v is not None}
        if not self.path.exists():
            return
        for _, raw, complete in _lines(self.path, None):
            obj = _parse(raw) if complete else None
            if obj is None or set(obj) != RECORD_FIELDS:
                continue
            if all(obj.get(k) == v for k, v in want.items()):
                yield TrailEntry.from_dict(obj)

    def _anchor_read(self, label: str, path: Path, *, required: bool) -> _AnchorRead:
        try:
            return _AnchorRead(label, self._read_anchor_file(path), required=required)
        except AuditTrailCorrupt as exc:
            return _AnchorRead(label, None, exc.problem, required)

    def _snapshot(self) -> tuple[int, _AnchorRead, _AnchorRead]:
        """Trail size and both anchors as one writer left them (read-only: creates nothing)."""
        with self._shared():
            size = self.path.stat().st_size if self.path.exists() else 0
            head = self._anchor_read(HEAD_LABEL, self.anchor_path, required=False)
            state = self._anchor_read(STATE_LABEL, self.state_anchor_path, required=True)
            return size, head, state

    def verify(self) -> VerifyReport:
        """Check the whole chain and its end against both anchors, streaming line by line.

        The anchors and the file size are read together under a shared lock, so a concurrent
        append is neither half-read nor mistaken for a cut tail; the scan runs unlocked.
        """
        size, head, state = self._snapshot()
        checker = _ChainChecker({r.anchor.seq for r in (head, state) if r.anchor is not None})
        if size:
            for line_no, raw, complete in _lines(self.path, size):
                checker.feed(line_no, raw, complete)
        return checker.finish(self.path, head, state)


def _chain(batch: list[AuditRecord], seq: int, prev: str) -> tuple[list[TrailEntry], list[bytes]]:
    """Number and link a batch after (seq, prev); returns the entries and their lines."""
    ts = _now()
    entries: list[TrailEntry] = []
    lines: list[bytes] = []
    for record in batch:
        seq += 1
        body: dict[str, Any] = {
            "seq": seq, "ts": ts, "kind": record.kind, "payload": record.payload,
            "agency": record.agency, "dataset": record.dataset, "day": record.day,
            "run_id": record.run_id, "prev_hash": prev,
        }  # fmt: skip
        prev = body["hash"] = hashlib.sha256(canonical_json(body)).hexdigest()
        lines.append(canonical_json(body) + b"\n")
        entries.append(TrailEntry.from_dict(body))
    return entries, lines


def _lines(path: Path, limit: int | None) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, bytes without newline, newline-terminated?) up to ``limit`` bytes."""
    remaining = limit
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if remaining is not None:
                if remaining <= 0:
                    return
                raw = raw[:remaining]
                remaining -= len(raw)
            complete = raw.endswith(b"\n")
            yield line_no, raw[:-1] if complete else raw, complete


def default_trail() -> AuditTrail:
    """The trail of the Flux home (``$FLUX_HOME``, else the default home)."""
    return AuditTrail(resolve_home())


# --- verification --------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One finding of verify(): what kind, where (line and seq when known), in words."""

    kind: ProblemKind | NoticeKind
    line: int | None
    seq: int | None
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


@dataclass(frozen=True)
class VerifyReport:
    """verify()'s verdict: ok when no problem was found (notices do not count)."""

    path: Path
    records: int
    head_seq: int
    head_hash: str | None
    anchor: Anchor | None
    problems: list[Problem]
    notices: list[Problem]
    state_anchor: Anchor | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class _Link:
    seq: int
    hash: str
    prev_hash: str
    line: int


@dataclass
class _Gap:
    """Seqs missing where a later seq appeared; a record filling one later is a reorder."""

    first: int
    last: int
    line: int
    seen_seq: int


class _ChainChecker:
    """Streaming chain check: remembers the head, pending gaps and one fork, not the file."""

    def __init__(self, watch: set[int]) -> None:
        self.problems: list[Problem] = []
        self.notices: list[Problem] = []
        self.records = 0
        self.lines = 0
        self.head: _Link | None = None  # the highest-seq record linked so far
        self.gaps: list[_Gap] = []
        self.fork: _Link | None = None  # a second record with head's seq and head's parent
        self.unparsed = 0  # unparsable lines since the head
        self.pending_bad: int | None = None  # an unparsable line: torn if it is the last
        self.seen: dict[int, _Link] = {}  # seq -> record, for the anchored seqs only
        self.watch = watch

    def problem(self, kind: ProblemKind, line: int | None, seq: int | None, msg: str) -> None:
        self.problems.append(Problem(kind, line, seq, msg))

    def feed(self, line_no: int, raw: bytes, complete: bool) -> None:
        self.lines = line_no
        if self.pending_bad is not None:  # another line follows: not a torn tail
            bad, self.pending_bad = self.pending_bad, None
            self.problem("malformed", bad, None, f"line {bad} is not a valid record (seq unknown)")
        if not complete:
            self.notices.append(
                Problem("torn", line_no, None, f"line {line_no} has no trailing newline (a torn "
                        "write); the next append moves it to trail.torn-*")
            )  # fmt: skip
            return
        obj = _parse(raw)
        if obj is None:
            self.pending_bad = line_no
            self.unparsed += 1
            return
        self.records += 1
        self.check_record(line_no, obj)

    def check_record(self, line_no: int, obj: dict[str, Any]) -> None:
        seq = obj["seq"]
        rec = _Link(seq, obj["hash"], str(obj.get("prev_hash")), line_no)
        edited = record_hash(obj) != rec.hash
        where = f"line {line_no} (seq {seq})"
        if edited:
            self.problem("edited", line_no, seq, f"{where}: content does not match its hash")
        elif (why := _shape_error(obj)) is not None:
            self.problem("malformed", line_no, seq, f"{where}: {why}")
        if self.fork is not None and seq > self.fork.seq:  # the next record decides
            self.resolve_fork(rec)
        if edited:  # its stored seq/prev_hash may be the edited fields: do not chase them
            expected = self.head.seq + 1 if self.head else 1
            self.advance(_Link(expected, rec.hash, rec.prev_hash, line_no))
        else:
            self.link(rec, where)

    def resolve_fork(self, rec: _Link) -> None:
        """Two records claimed one seq; the one the next record links to is the original."""
        if self.fork is None or self.head is None:
            return
        first, second = self.head, self.fork
        self.fork = None
        if rec.prev_hash == second.hash:
            first, second = second, first
            self.advance(first)
        elif rec.prev_hash != first.hash:
            self.report_fork(first, second)
            return
        self.problem(
            "inserted", second.line, second.seq,
            f"line {second.line} (seq {second.seq}): inserted by hand; the original seq "
            f"{second.seq} is line {first.line} (the next record links to it)",
        )  # fmt: skip

    def report_fork(self, a: _Link, b: _Link) -> None:
        lines = sorted((a.line, b.line))
        self.problem(
            "inserted", lines[1], a.seq,
            f"seq {a.seq} appears at lines {lines[0]} and {lines[1]}, both linking to seq "
            f"{a.seq - 1}: one of them was inserted by hand",
        )  # fmt: skip

    def link(self, rec: _Link, where: str) -> None:
        head = self.head
        expected = head.seq + 1 if head else 1
        parent = head.hash if head else GENESIS_HASH
        if rec.seq == expected:
            if rec.prev_hash != parent and not self.unparsed:
                before = f"seq {head.seq} (line {head.line})" if head else "the genesis hash"
                self.problem(
                    "removed", rec.line, rec.seq,
                    f"{where}: prev_hash does not match {before}: the record before it was "
                    "replaced or removed",
                )  # fmt: skip
            self.advance(rec)
        elif rec.seq > expected:
            if rec.seq - expected > self.unparsed:  # else: the unparsable lines held them
                self.gaps.append(_Gap(expected, rec.seq - 1, rec.line, rec.seq))
            self.advance(rec)
        elif head is not None and rec.seq == head.seq and rec.hash == head.hash:
            self.problem("inserted", rec.line, rec.seq, f"{where}: a copy of line {head.line}")
        elif head is not None and rec.seq == head.seq and rec.prev_hash == head.prev_hash:
            self.fork = rec
        else:
            self.out_of_order(rec, where)

    def out_of_order(self, rec: _Link, where: str) -> None:
        head = self.head
        after = f"seq {head.seq} (line {head.line})" if head else "the start"
        for gap in self.gaps:
            if gap.first <= rec.seq <= gap.last:
                self.fill_gap(gap, rec.seq)
                msg = f"{where} comes after {after}: records out of order (swapped?)"
                break
        else:
            msg = f"{where} comes after {after}: seq goes backwards (duplicated or moved)"
        self.problem("reordered", rec.line, rec.seq, msg)

    def fill_gap(self, gap: _Gap, seq: int) -> None:
        self.gaps.remove(gap)
        if gap.first < seq:
            self.gaps.append(_Gap(gap.first, seq - 1, gap.line, gap.seen_seq))
        if seq < gap.last:
            self.gaps.append(_Gap(seq + 1, gap.last, gap.line, gap.seen_seq))

    def advance(self, rec: _Link) -> None:
        self.head = rec
        self.unparsed = 0
        if rec.seq in self.watch:
            self.seen[rec.seq] = rec

    def finish(self, path: Path, head_read: _AnchorRead, state_read: _AnchorRead) -> VerifyReport:
        if self.pending_bad is not None:
            bad = self.pending_bad
            self.notices.append(
                Problem("torn", bad, None, f"line {bad}, the last, is not a record (a torn "
                        "write); the next append moves it to trail.torn-*")
            )  # fmt: skip
        if self.fork is not None and self.head is not None:
            self.report_fork(self.head, self.fork)
        for gap in sorted(self.gaps, key=lambda g: g.first):
            missing = (
                f"seq {gap.first}" if gap.first == gap.last else f"seqs {gap.first}-{gap.last}"
            )
            self.problem(
                "removed", gap.line, gap.first,
                f"line {gap.line} (seq {gap.seen_seq}): {missing} missing before it (removed)",
            )  # fmt: skip
        for read in _merged(head_read, state_read):
            self.check_anchor(read)
        self.problems.sort(key=lambda p: (p.line is None, p.line or 0))
        head = self.head
        return VerifyReport(
            path=path,
            records=self.records,
            head_seq=head.seq if head else 0,
            head_hash=head.hash if head else None,
            anchor=head_read.anchor,
            problems=self.problems,
            notices=self.notices,
            state_anchor=state_read.anchor,
        )

    def check_anchor(self, read: _AnchorRead) -> None:
        head_seq = self.head.seq if self.head else 0
        end = f"line {self.head.line}" if self.head else "an empty trail"
        anchor = read.anchor
        if read.error is not None:
            self.problem("malformed", None, None, f"{read.label} is unreadable ({read.error})")
        elif anchor is None:
            self.missing_anchor(read, head_seq)
        elif head_seq < anchor.seq:
            self.problem(
                "truncated", self.lines + 1, head_seq + 1,
                f"the trail ends at seq {head_seq} ({end}) but {read.says} seq "
                f"{anchor.seq}: seq {head_seq + 1}-{anchor.seq} were cut from the end "
                f"(would start at line {self.lines + 1})",
            )  # fmt: skip
        elif (rec := self.seen.get(anchor.seq)) is not None and rec.hash != anchor.hash:
            self.problem(
                "rewritten", rec.line, rec.seq,
                f"line {rec.line} (seq {rec.seq}): its hash is not the one {read.says}; "
                "the chain was rewritten up to here (hashes recomputed)",
            )  # fmt: skip
        elif anchor.seq == 0 and anchor.hash != GENESIS_HASH:
            self.problem("malformed", None, None, f"{read.label} anchors seq 0 with a "
                         "hash other than the genesis hash")  # fmt: skip
        elif head_seq > anchor.seq:
            self.notices.append(
                Problem("anchor_behind", None, anchor.seq, f"{read.says} seq {anchor.seq}"
                        f" but the trail goes on to seq {head_seq} (a crash before the anchor "
                        "was updated, or records appended by hand)")
            )  # fmt: skip

    def missing_anchor(self, read: _AnchorRead, head_seq: int) -> None:
        """No anchor outside audit/ beside records is a finding; no head.json a notice."""
        if read.required and self.head is not None:
            self.problem(
                "unanchored", None, head_seq,
                f"no {read.label} although the trail goes on to seq {head_seq}: the anchor "
                "outside audit/ was removed (or the trail is older than it), so a cut tail "
                "cannot be ruled out; check the trail, then run `flux audit anchor`",
            )  # fmt: skip
        elif not read.required:
            self.notices.append(
                Problem("no_anchor", None, None, f"no {read.label} (removed, or a trail "
                        "older than it)")
            )  # fmt: skip


def _merged(head: _AnchorRead, state: _AnchorRead) -> list[_AnchorRead]:
    """Two anchors that agree are checked (and reported) once, naming both files."""
    if head.anchor is not None and head.anchor == state.anchor:
        label = f"{head.label} and {state.label}"
        return [_AnchorRead(label, head.anchor, required=True, both=True)]
    return [head, state]
