"""Record who accessed what (``access`` records in the audit trail), and notice role changes.

Every authenticated action Flux allows or refuses (an upload, a report download, a
validation, a published read, a quality override) goes through ``record_access``, so the
trail answers "who touched agency A's data, with which role, and was it allowed". A token
that fails verification has no identity to name: ``record_unverified_access`` records the
attempt (aggregated by ``access/failed_tokens.py``, so a flood cannot grow the trail).

Role changes: the identity provider decides roles (its groups), so a person promoted to
operator, or moved to another agency, shows up in Flux only as a token with other claims.
``record_access`` remembers the role and agency each subject was last seen with and, when
a token carries a different one, appends an ``access`` record with action ``role_change``
(from -> to) before the access itself, once per change, not on every access.

The trail is the truth; ``state/access_roles.json`` is only a cache of "last seen" so that
an access does not rescan the trail. The cache names the trail record it was built through
(seq and hash): each call catches up by reading the trail backwards to that record (the
records appended since, usually a handful), and rebuilds from a full scan of the trail's
access records when the cache is missing, unreadable, or names a record the trail no longer
holds. A crash between the trail's append and the cache's replace therefore costs a catch-up,
never a duplicate or a missed ``role_change``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from flux_pipelines.audit.trail import (
    GENESIS_HASH,
    AuditRecord,
    AuditTrail,
    JSONValue,
    TrailEntry,
    access_record,
)
from flux_pipelines.files import write_atomic
from flux_pipelines.locks import exclusive_lock

if TYPE_CHECKING:
    from flux_pipelines.access.identity import Identity

# denied: the role or agency does not allow it; refused: allowed, but the request was bad;
# failed: allowed, but it did not complete (an upload that could not be landed)
Outcome = Literal["allowed", "denied", "refused", "failed"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)
ROLE_CHANGE = "role_change"
ROLE_CHANGE_OUTCOME = "observed"  # nobody asked for anything: Flux noticed new claims
CACHE_FILE = Path("state") / "access_roles.json"
CACHE_LOCK = Path("state") / "access_roles.lock"
_RESERVED = frozenset({"identity", "action", "outcome"})
_CHUNK = 65536
_CACHE_VERSION = 1


@dataclass(frozen=True)
class Seen:
    """The role and agency a subject was last seen with, and the trail record saying so."""

    role: str | None
    agency: str | None
    seq: int


@dataclass
class LastSeen:
    """The cache: every subject's last role, built through trail record (seq, hash)."""

    seq: int = 0
    hash: str = GENESIS_HASH
    subjects: dict[str, Seen] = field(default_factory=dict)

    def apply(self, obj: dict[str, Any]) -> None:
        """Take one trail record (a dict as stored) into account, in trail order."""
        self.seq, self.hash = obj["seq"], obj["hash"]
        payload = obj.get("payload")
        if obj.get("kind") != "access" or not isinstance(payload, dict):
            return
        who = payload.get("identity")
        if isinstance(who, dict) and isinstance(who.get("subject"), str) and who["subject"]:
            self.subjects[who["subject"]] = Seen(who.get("role"), who.get("agency"), obj["seq"])

    def to_json(self) -> dict[str, Any]:
        return {
            "version": _CACHE_VERSION,
            "seq": self.seq,
            "hash": self.hash,
            "subjects": {
                s: {"role": v.role, "agency": v.agency, "seq": v.seq}
                for s, v in sorted(self.subjects.items())
            },
        }

    @classmethod
    def from_json(cls, obj: Any) -> LastSeen | None:
        """None when the file is not a cache this version wrote (it is then rebuilt)."""
        try:
            if obj["version"] != _CACHE_VERSION:
                return None
            subjects = {
                str(s): Seen(v["role"], v["agency"], int(v["seq"]))
                for s, v in obj["subjects"].items()
            }
            return cls(int(obj["seq"]), str(obj["hash"]), subjects)
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


def record_access(
    home: Path | str,
    identity: Identity,
    action: str,
    outcome: Outcome,
    *,
    agency: str | None = None,
    dataset: str | None = None,
    day: dt.date | str | None = None,
    detail: dict[str, JSONValue] | None = None,
    records: Sequence[AuditRecord] = (),
) -> list[TrailEntry]:
    """Append an ``access`` record for ``identity`` (preceded by a ``role_change`` record when
    its role or agency differs from the last time Flux saw its subject).

    ``records`` are appended in the same write, after the access record, so an action and
    its access record (an override and who made it) reach the trail together or not at all.
    Returns the entries appended. Raises ``AuditAnchorMismatch`` when the trail refuses
    appends (tampering found), ``ValueError`` for an unknown outcome or a ``detail`` key that
    would shadow the record's own fields.
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"access outcome {outcome!r} is not one of {OUTCOMES}")
    if clash := _RESERVED & set(detail or {}):
        raise ValueError(f"access detail may not set {sorted(clash)}: the record's own fields")
    if not identity.subject:
        raise ValueError("an access record needs the identity's subject")
    home = Path(home)
    trail = AuditTrail(home)
    fields = identity.audit_fields()
    batch: list[AuditRecord] = []
    with _cache_locked(home):
        seen = _load(trail)
        before = seen.subjects.get(identity.subject)
        if before is not None and (before.role, before.agency) != (identity.role, identity.agency):
            change: dict[str, JSONValue] = {
                "from": {"role": before.role, "agency": before.agency},
                "to": {"role": identity.role, "agency": identity.agency},
                "last_seen_seq": before.seq,
            }
            batch.append(
                access_record(
                    fields, ROLE_CHANGE, ROLE_CHANGE_OUTCOME, agency=identity.agency, detail=change
                )
            )
        batch.append(
            access_record(
                fields, action, outcome, agency=agency, dataset=dataset, day=day, detail=detail
            )
        )
        entries = trail.append_many([*batch, *records])
        for entry in entries:
            seen.apply(entry.to_dict())
        _save(home, seen)
    return entries


def record_unverified_access(
    home: Path | str, action: str, outcome: Outcome, *, detail: dict[str, JSONValue]
) -> TrailEntry:
    """Append an ``access`` record of a request no identity could be established for (a
    token that failed verification): the identity is marked unverified and names nobody,
    so no subject's role history is touched; what the token *claimed* belongs in
    ``detail`` under keys saying it is unverified."""
    if outcome not in OUTCOMES:
        raise ValueError(f"access outcome {outcome!r} is not one of {OUTCOMES}")
    if clash := _RESERVED & set(detail):
        raise ValueError(f"access detail may not set {sorted(clash)}: the record's own fields")
    nobody: dict[str, JSONValue] = {
        "verified": False,
        "subject": None,
        "email": None,
        "role": None,
        "agency": None,
    }
    return AuditTrail(Path(home)).append(access_record(nobody, action, outcome, detail=detail))


def last_seen(home: Path | str) -> LastSeen:
    """The cache brought up to date with the trail (rebuilt from it when needed)."""
    home = Path(home)
    with _cache_locked(home):
        seen = _load(AuditTrail(home))
        _save(home, seen)
        return seen


def rebuild_last_seen(home: Path | str) -> LastSeen:
    """Rebuild the cache from a full scan of the trail's access records, and write it."""
    home = Path(home)
    with _cache_locked(home):
        seen = _rebuild(AuditTrail(home))
        _save(home, seen)
        return seen


# --- the cache -----------------------------------------------------------------------------


def _load(trail: AuditTrail) -> LastSeen:
    """The cache caught up with the trail's records since it was written, or rebuilt."""
    path = trail.home / CACHE_FILE
    try:
        cached = LastSeen.from_json(json.loads(path.read_bytes()))
    except (OSError, ValueError):  # missing, unreadable, not JSON: the trail has it all
        cached = None
    if cached is None:
        return _rebuild(trail)
    newer = _records_since(trail, cached.seq, cached.hash)
    if newer is None:  # the record it was built through is gone or different
        return _rebuild(trail)
    for obj in newer:
        cached.apply(obj)
    return cached


def _rebuild(trail: AuditTrail) -> LastSeen:
    seen = LastSeen()
    if trail.exists():
        for entry in trail.iter_records(kind="access"):
            seen.apply(entry.to_dict())
    return seen


def _records_since(trail: AuditTrail, seq: int, hash_: str) -> list[dict[str, Any]] | None:
    """Records after (seq, hash) oldest first, reading the trail backwards to that record;
    None when the trail does not hold that record any more."""
    newer: list[dict[str, Any]] = []
    if not trail.exists():
        return newer if seq == 0 else None
    for raw in _lines_backwards(trail.path):
        obj = _record(raw)
        if obj is None:
            continue
        if obj["seq"] > seq:
            newer.append(obj)
            continue
        if obj["seq"] == seq and obj["hash"] == hash_:
            break
        return None
    else:
        if seq != 0:
            return None
    newer.reverse()
    return newer


def _record(raw: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("hash"), str):
        return None
    seq = obj.get("seq")
    return obj if isinstance(seq, int) and not isinstance(seq, bool) else None


def _lines_backwards(path: Path) -> Iterator[bytes]:
    """The file's non-empty lines, last first, reading fixed-size blocks from the end."""
    with path.open("rb") as f:
        pos = f.seek(0, os.SEEK_END)
        rest = b""
        while pos > 0:
            step = min(_CHUNK, pos)
            pos -= step
            f.seek(pos)
            lines = (f.read(step) + rest).split(b"\n")
            rest = lines[0]
            yield from (line for line in reversed(lines[1:]) if line)
        if rest:
            yield rest


def _save(home: Path, seen: LastSeen) -> None:
    """Replace the cache atomically (temp file, fsync, rename), readable by its owner only."""
    text = json.dumps(seen.to_json(), sort_keys=True) + "\n"
    write_atomic(home / CACHE_FILE, text, durable=True, mode=0o600)


@contextmanager
def _cache_locked(home: Path) -> Iterator[None]:
    """One reader-updater of the cache at a time, so two accesses of one newly promoted
    subject cannot both record its role change."""
    with exclusive_lock(home / CACHE_LOCK):
        yield
