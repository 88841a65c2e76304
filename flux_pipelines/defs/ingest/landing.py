"""Landing-zone sensors: one per dataset, a run per new or corrected (agency, day) delivery.

Each tick lists ``landing/<agency>/<dataset>/<day>/`` for every agency that delivers the
dataset and compares each folder with the cursor:

- Everything is listed and opened confined to the agency's landing folder
  (``ingest/confine.py``): a link is never followed, a FIFO never opened, and the tick reads
  no file bigger than ``HASH_MAX_BYTES`` (such a file counts by size, mtime and inode), so
  its cost does not grow with file size; hashing is also capped per tick
  (``HASH_BUDGET_BYTES``, the rest waits for the next tick, agencies served in turn). A
  problem in one agency's folders (unreadable, a link, a FIFO) is a *finding* about that
  folder; it never fails the tick, so every other agency's deliveries are still picked up.
- A folder is *complete* (ready to load) when it has a ``_SUCCESS`` marker written after
  its last data file; or, with a manifest, when every listed file is present (or the
  manifest is older than ``MANIFEST_GRACE_SECONDS``: the load then rejects the missing files)
  and no file changed within the quiet period; or, without either, when no file changed
  within the quiet period (``FLUX_LANDING_QUIET_SECONDS``, default ``QUIET_SECONDS``).
  Agencies listed in ``FLUX_LANDING_REQUIRE_MARKER`` (or ``*``) must send a marker or a
  manifest: a quiet period proves nothing about a writer that stalls. Hidden and temporary
  names (``.x``, ``_x``, ``~x``, ``*.tmp``, ``*.part``) are never data.
- Whatever Flux will not load is reported with its reason, in the tick's log and skip
  reason and in ``<home>/landing_findings.json`` (``unloadable``): unknown agency or dataset
  folders, folders that are no delivery day, links, sub-folders and special files, hidden
  or temporary names older than ``HIDDEN_GRACE_SECONDS``, deliveries still incomplete after
  the grace period. The sensor of the alphabetically first dataset (``zone_steward``) also
  reports what lies outside every dataset folder.
- Its *fingerprint* is the sha256 of every entry's name and content hash (manifest
  included; a big file, a link or a sub-folder by its stat token). A file is re-hashed only
  when its size, mtime or inode changed.
- A changed fingerprint requests a run; the run key carries the fingerprint and the
  files' size and mtime, so an identical re-delivery never runs twice and a corrected one
  always does, even one reverted to earlier content (Dagster skips any run key it has
  seen, so A, B, then A again must not reuse A's key).
- Except when the content was loaded already by something else: a new or changed folder
  whose delivery receipt (``ingest/receipts.py``, written by every load of the day:
  ``flux demo``, ``flux load``, a backfill, a sensor's run) holds the same fingerprint, and
  was written after the folder's files last changed (their ctime), is recorded in the
  cursor without a run. So ``flux dev`` after ``flux demo`` does not load the demo again.
  The time condition keeps A, B, then A again right while B's run has not yet written its
  receipt (A's receipt is older than A's return).

Changed days of one agency that follow each other go into one run over the day range
(the ingest assets have a single-run backfill policy), so dropping a year of files gives a
handful of runs, not 365.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import dagster as dg

from flux_pipelines.contracts.registry import Agency, Registry
from flux_pipelines.defs.ingest.assets import asset_keys
from flux_pipelines.defs.ingest.jobs import agency_job_name
from flux_pipelines.errors import ConfigurationError, UnsafePath
from flux_pipelines.files import write_atomic
from flux_pipelines.ingest.confine import (
    LANDING,
    ConfinedDir,
    Entry,
    open_zone,
    stat_key,
)
from flux_pipelines.ingest.delivery import (
    IGNORED_PREFIXES,
    TEMPORARY_SUFFIXES,
    is_content_folder,
    is_data_file_name,
)
from flux_pipelines.ingest.manifest import (
    COMPLETION_MARKER,
    MANIFEST_NAMES,
    ManifestInvalid,
    read_manifest,
)
from flux_pipelines.ingest.receipts import (
    Receipt,
    entry_token,
    fingerprint,
    hash_confined,
    is_delivery_name,
    read_receipt,
)
from flux_pipelines.names import (
    LANDING_FINDINGS_FILE,
    RANGE_END_TAG,
    RANGE_START_TAG,
    outbox_root,
)
from flux_pipelines.ops.logs import CONSOLE_RUN_CONFIG
from flux_pipelines.resources.warehouse import FluxWarehouse

QUIET_SECONDS = 30.0  # default quiet period: a writer pausing longer needs a marker
QUIET_ENV = "FLUX_LANDING_QUIET_SECONDS"
REQUIRE_MARKER_ENV = "FLUX_LANDING_REQUIRE_MARKER"  # agency ids, comma-separated, or *
MANIFEST_GRACE_SECONDS = 600.0
HIDDEN_GRACE_SECONDS = 600.0  # a temporary name older than this is an upload left behind
HASH_BUDGET_BYTES = 256 << 20  # content hashed per tick at most (after the first folder)
MAX_RUNS_PER_TICK = 50
TICK_SECONDS = 15  # the sensors' minimum interval
MAX_LOGGED = 10
DELIVERY_TAG = "flux/delivery"
FINDINGS_FILE = LANDING_FINDINGS_FILE
ZONE_SECTION = "landing_zone"


@dataclass(frozen=True)
class FolderState:
    """What the cursor remembers of one delivery folder."""

    fingerprint: str  # names and content hashes (or stat tokens): decides whether to run
    files: dict[str, tuple[str, str]]  # name -> (stat key, sha256 or token); re-hash on change


@dataclass(frozen=True)
class Delivery:
    agency: Agency
    day: dt.date
    state: FolderState


@dataclass(frozen=True)
class Finding:
    """Something under landing/ that Flux will not load, and why (an operator reads it)."""

    path: str  # below landing/, e.g. "nga/media_items/2026-02-02/sub"
    rule: str  # a delivery.* rule id (ingest/confine.py: LANDING_RULES)
    reason: str


@dataclass(frozen=True)
class Policy:
    """When a delivery folder counts as complete (``landing_policy`` reads it)."""

    quiet_seconds: float = QUIET_SECONDS
    require_marker: frozenset[str] = frozenset()  # agency ids; "*" means every agency

    def requires_marker(self, agency_id: str) -> bool:
        return "*" in self.require_marker or agency_id in self.require_marker


def landing_policy(environ: Mapping[str, str] | None = None) -> Policy:
    """The policy from ``FLUX_LANDING_QUIET_SECONDS`` and ``FLUX_LANDING_REQUIRE_MARKER``
    (read on every tick: the daemon's environment); a bad value fails the tick, loudly."""
    env = os.environ if environ is None else environ
    raw = env.get(QUIET_ENV, "").strip()
    try:
        quiet = float(raw) if raw else QUIET_SECONDS
    except ValueError:
        quiet = -1.0
    if not quiet >= 0:
        raise ConfigurationError(
            f"{QUIET_ENV}={raw!r}: give the quiet period in seconds, a number >= 0 "
            f"(default {QUIET_SECONDS:g})"
        )
    names = env.get(REQUIRE_MARKER_ENV, "")
    return Policy(quiet, frozenset(n.strip() for n in names.split(",") if n.strip()))


def landing_sensor_name(dataset: str) -> str:
    return f"landing_{dataset}"


def is_hidden_name(name: str) -> bool:
    """Hidden and temporary names: never data, never a delivery day."""
    return name.startswith(IGNORED_PREFIXES) or name.lower().endswith(TEMPORARY_SUFFIXES)


def _parse_day(name: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(name)
    except ValueError:
        return None


CLOCK_SKEW_SECONDS = 300.0  # an agency's clock may run this far ahead of ours


def written_at(entry: Entry, now: float) -> float:
    """When the entry was last written: its mtime, unless that lies in the future (set by
    the agency's tools or a skewed clock), then its ctime, which only the kernel sets; a
    file dated years ahead would otherwise never be quiet, never load, never be reported."""
    if entry.stat.st_mtime > now + CLOCK_SKEW_SECONDS:
        return entry.stat.st_ctime
    return entry.stat.st_mtime


def _age(entry: Entry, now: float) -> float:
    return now - written_at(entry, now)


def _refused(where: str, entry: Entry, folder: ConfinedDir, *, want: str) -> Finding:
    """A finding for an entry that is not the plain ``want`` (file or folder) it should be."""
    problem = folder.refusal(entry.name, want=want, st=entry.stat)
    return Finding(where, problem.rule_id, problem.reason)


def _finding(where: str, exc: BaseException) -> Finding:
    """A finding for a folder that could not be looked at (never a failed tick)."""
    if isinstance(exc, UnsafePath):
        return Finding(where, exc.rule_id, exc.reason)
    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return Finding(
        where,
        "delivery.unreadable",
        f"landing/{where} cannot be read by Flux ({detail}); nothing in it is loaded until it "
        "can be: fix its permissions or type",
    )


def is_ready(
    data: list[Entry],
    manifest: Entry | None,
    marker: Entry | None,
    listed: set[str] | None,
    *,
    now: float,
    quiet_seconds: float,
    marker_required: bool = False,
) -> tuple[bool, str | None]:
    """Whether a day folder is complete, and if not, what it is waiting for (None: only the
    quiet period, i.e. a file is still being written).

    ``listed`` are the names the manifest lists (None: no manifest, or one the load will
    reject as invalid). A ``_SUCCESS`` marker counts only when it is a regular file written
    no earlier than every data file.
    """
    if not data:
        return False, None
    if marker is not None and marker.is_file:
        if max(written_at(e, now) for e in data) > written_at(marker, now):
            return False, (
                f"a file changed after {COMPLETION_MARKER} was written: write "
                f"{COMPLETION_MARKER} again once every file is complete"
            )
    elif manifest is None and marker_required:
        return False, (
            f"no {COMPLETION_MARKER} marker or manifest yet: this agency must signal a "
            "complete delivery (write _SUCCESS after the last file, or a manifest)"
        )
    else:
        changing = [*data, *([manifest] if manifest else [])]
        if any(_age(e, now) < quiet_seconds for e in changing):
            return False, None
    if manifest is None or listed is None:
        return True, None
    missing = sorted(listed - {e.name for e in data})
    if missing and _age(manifest, now) <= MANIFEST_GRACE_SECONDS:
        return False, f"the manifest lists file(s) not delivered yet: {', '.join(missing[:5])}"
    return True, None


def _listed(folder: Path, manifest: Entry | None) -> set[str] | None:
    """Names the manifest lists; None when there is none or it is invalid (the load says so)."""
    if manifest is None or not manifest.is_file:
        return None
    try:
        return {f.name for f in read_manifest(folder / manifest.name).files}
    except ManifestInvalid:
        return None


# a file caught mid-change: look again next tick rather than request a load
RETRY_LATER = frozenset({"delivery.vanished", "delivery.changed_while_reading"})


def folder_state(
    folder: ConfinedDir, entries: list[Entry], previous: FolderState | None
) -> FolderState | None:
    """The folder's fingerprint, hashing only small regular files whose stat changed; None
    when a file changed while it was hashed (still being written: try next tick)."""
    known = previous.files if previous else {}
    state: dict[str, tuple[str, str]] = {}
    for entry in entries:
        key = stat_key(entry.stat)
        seen = known.get(entry.name)
        if seen and seen[0] == key:
            state[entry.name] = (key, seen[1])
            continue
        token = entry_token(entry)
        if token is None:
            try:
                hashed = hash_confined(folder, entry.name)
            except UnsafePath as exc:
                if exc.rule_id in RETRY_LATER:
                    return None
                # a file the load will refuse by name (a hard link, say): the day still
                # loads, its other files too, and the load's report names this one's rule
                state[entry.name] = (key, f"refused:{exc.rule_id}")
                continue
            if hashed is None or hashed[1] != key:
                return None
            token = hashed[0]
        state[entry.name] = (key, token)
    return FolderState(fingerprint({name: token for name, (_, token) in state.items()}), state)


def hash_cost(entries: list[Entry], previous: FolderState | None) -> int:
    """Bytes ``folder_state`` would read: small regular files whose stat changed."""
    known = previous.files if previous else {}
    return sum(
        e.stat.st_size
        for e in entries
        if entry_token(e) is None and (e.name not in known or known[e.name][0] != stat_key(e.stat))
    )


def loaded_already(receipt: Receipt | None, state: FolderState, changed_at: float) -> bool:
    """The receipt says this very content was loaded after the files last changed (their
    newest ctime, which no copy keeps)."""
    if receipt is None or receipt.sensor_fingerprint != state.fingerprint:
        return False
    return receipt.written_at.timestamp() > changed_at


ReceiptLookup = Callable[[Agency, dt.date], Receipt | None]


class Scan(NamedTuple):
    changed: list[Delivery]  # new or changed ready deliveries: to run
    cursor: dict[str, FolderState]  # the next cursor
    bad_names: list[str]  # folder names that are not days in range
    loaded: list[Delivery]  # new or changed, but their receipt says loaded already
    findings: list[Finding]  # what Flux will not load, with the reason
    deferred: list[str]  # complete folders left for the next tick (hash budget)


@dataclass
class _Candidate:
    """A complete day folder whose entries differ from the cursor's (phase 2 hashes it)."""

    agency: Agency
    day: dt.date
    key: str
    entries: list[Entry]
    previous: FolderState | None
    changed_at: float = 0.0
    cost: int = field(default=0)


def scan_dataset(
    landing_root: Path,
    dataset: str,
    agencies: list[Agency],
    cursor: dict[str, FolderState],
    *,
    now: float,
    quiet_seconds: float,
    receipt_for: ReceiptLookup | None = None,
    marker_required: Collection[str] = (),
    others: Collection[str] = (),
    hash_budget: int = HASH_BUDGET_BYTES,
) -> Scan:
    """Compare the landing folders with the cursor (and, for a new or changed folder, with
    its delivery receipt when ``receipt_for`` is given).

    Phase 1 only lists and ``lstat``s (cost: the number of entries); phase 2 hashes the
    small files of new or changed complete folders, agencies in turn, within
    ``hash_budget`` bytes. ``others`` are registry agencies that do not deliver the dataset
    (a folder of theirs for it is a finding). ``marker_required``: agency ids (or "*").
    """
    policy = Policy(quiet_seconds, frozenset(marker_required))
    next_cursor: dict[str, FolderState] = {}
    bad_names: list[str] = []
    findings: list[Finding] = []
    queues: list[list[_Candidate]] = []
    for agency in agencies:
        try:
            queue = _scan_agency(
                landing_root, dataset, agency, cursor, next_cursor, bad_names, findings,
                now=now, policy=policy,
            )  # fmt: skip
        except FileNotFoundError:  # nothing delivered yet (or the folder just went)
            _keep_agency(cursor, next_cursor, agency.id)
            continue
        except (UnsafePath, OSError) as exc:  # the agency's dataset folder itself
            findings.append(_finding(f"{agency.id}/{dataset}", exc))
            _keep_agency(cursor, next_cursor, agency.id)
            continue
        queues.append(queue)
    for other in sorted(others):
        findings += _not_delivered(landing_root, other, dataset)
    changed: list[Delivery] = []
    loaded: list[Delivery] = []
    deferred: list[str] = []
    spent = 0
    for candidate in _in_turn(queues, first=int(now // TICK_SECONDS)):
        if candidate.cost and spent and spent + candidate.cost > hash_budget:
            deferred.append(candidate.key)
            _keep(cursor, next_cursor, candidate.key)
            continue
        where = f"{candidate.agency.id}/{dataset}/{candidate.day.isoformat()}"
        try:
            with open_zone(landing_root, where.split("/"), zone=LANDING) as folder:
                state = folder_state(folder, candidate.entries, candidate.previous)
        except (UnsafePath, OSError) as exc:  # replaced or gone since it was listed
            findings.append(_finding(where, exc))
            state = None
        spent += candidate.cost
        if state is None:
            _keep(cursor, next_cursor, candidate.key)
            continue
        next_cursor[candidate.key] = state
        if candidate.previous is not None and candidate.previous.fingerprint == state.fingerprint:
            continue
        delivery = Delivery(candidate.agency, candidate.day, state)
        if receipt_for is not None and loaded_already(
            receipt_for(candidate.agency, candidate.day), state, candidate.changed_at
        ):
            loaded.append(delivery)
        else:
            changed.append(delivery)
    return Scan(changed, next_cursor, bad_names, loaded, findings, deferred)


def _scan_agency(
    landing_root: Path,
    dataset: str,
    agency: Agency,
    cursor: dict[str, FolderState],
    next_cursor: dict[str, FolderState],
    bad_names: list[str],
    findings: list[Finding],
    *,
    now: float,
    policy: Policy,
) -> list[_Candidate]:
    """Phase 1 for one agency: its complete day folders that differ from the cursor; every
    other entry under ``landing/<agency>/<dataset>/`` kept as it was or reported."""
    first = agency.onboarded  # the agency's partitions start there
    last = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    queue: list[_Candidate] = []
    with open_zone(landing_root, [agency.id, dataset], zone=LANDING) as root:
        for entry in root.entries():
            key = f"{agency.id}/{entry.name}"
            where = f"{agency.id}/{dataset}/{entry.name}"
            if is_hidden_name(entry.name):
                if _age(entry, now) > HIDDEN_GRACE_SECONDS:
                    findings.append(_hidden(where))
                continue
            if not entry.is_dir:
                findings.append(_refused(where, entry, root, want="folder"))
                _keep(cursor, next_cursor, key)
                continue
            day = _parse_day(entry.name)
            if day is None or not first <= day <= last:
                if key not in cursor:
                    bad_names.append(f"{dataset}/{entry.name}")
                findings.append(
                    Finding(
                        where,
                        "delivery.unknown_folder",
                        f"{entry.name!r} is not a delivery day of {agency.id}: deliver into "
                        f"landing/{agency.id}/{dataset}/<YYYY-MM-DD>/, a day from "
                        f"{first.isoformat()} (onboarded) to tomorrow",
                    )
                )
                continue
            try:
                with root.subdir(entry.name) as folder:
                    candidate = _day_folder(
                        landing_root, folder, agency, day, key, where, cursor, findings,
                        now=now, policy=policy,
                    )  # fmt: skip
            except FileNotFoundError:  # removed while the tick looked: nothing to say
                candidate = None
            except (UnsafePath, OSError) as exc:
                findings.append(_finding(where, exc))
                candidate = None
            if candidate is None:
                _keep(cursor, next_cursor, key)
            elif candidate.previous is not None and _unchanged(candidate):
                next_cursor[key] = candidate.previous
            else:
                queue.append(candidate)
    return queue


def _day_folder(
    landing_root: Path,
    folder: ConfinedDir,
    agency: Agency,
    day: dt.date,
    key: str,
    where: str,
    cursor: dict[str, FolderState],
    findings: list[Finding],
    *,
    now: float,
    policy: Policy,
) -> _Candidate | None:
    """One day folder: report what will not load, and return it if it is complete."""
    entries = folder.entries()
    data = [e for e in entries if is_data_file_name(e.name)]
    data_names = {e.name for e in data}
    manifest = next((e for n in MANIFEST_NAMES for e in entries if e.name == n), None)
    marker = next((e for e in entries if e.name == COMPLETION_MARKER), None)
    for entry in entries:
        inner = f"{where}/{entry.name}"
        if entry.name in data_names:
            # listed in the delivery: the load rejects it (the content package is read apart)
            if not entry.is_file and not is_content_folder(entry):
                findings.append(_refused(inner, entry, folder, want="file"))
        elif entry.name in MANIFEST_NAMES or entry.name == COMPLETION_MARKER:
            if not entry.is_file:
                findings.append(_refused(inner, entry, folder, want="file"))
        elif _age(entry, now) > HIDDEN_GRACE_SECONDS:
            findings.append(_hidden(inner))
    listed = _listed(landing_root / where, manifest)
    ready, waiting = is_ready(
        data,
        manifest,
        marker,
        listed,
        now=now,
        quiet_seconds=policy.quiet_seconds,
        marker_required=policy.requires_marker(agency.id),
    )
    if not ready:
        newest = max((written_at(e, now) for e in entries), default=now)
        if waiting and now - newest > MANIFEST_GRACE_SECONDS:
            findings.append(Finding(where, "delivery.incomplete", f"not loaded yet: {waiting}"))
        return None
    tracked = [e for e in entries if is_delivery_name(e.name)]
    previous = cursor.get(key)
    return _Candidate(
        agency,
        day,
        key,
        tracked,
        previous,
        changed_at=max(e.stat.st_ctime for e in tracked),
        cost=hash_cost(tracked, previous),
    )


def _unchanged(candidate: _Candidate) -> bool:
    """Every entry has the stat the cursor remembers: nothing to hash, nothing to run."""
    known = candidate.previous.files if candidate.previous else None
    return known is not None and {e.name: stat_key(e.stat) for e in candidate.entries} == {
        name: stat for name, (stat, _) in known.items()
    }


def _hidden(where: str) -> Finding:
    return Finding(
        where,
        "delivery.hidden_name",
        f"hidden or temporary name, never loaded, here for over {HIDDEN_GRACE_SECONDS:.0f} s "
        "(an upload that never finished?): rename it to its final name or remove it",
    )


def _not_delivered(landing_root: Path, agency_id: str, dataset: str) -> list[Finding]:
    """A registry agency's folder for a dataset it does not deliver: nothing in it loads."""
    try:
        with open_zone(landing_root, [agency_id], zone=LANDING) as root:
            if root.lstat(dataset) is None:
                return []
    except (UnsafePath, OSError):
        return []  # the zone steward reports the agency folder itself
    return [
        Finding(
            f"{agency_id}/{dataset}",
            "delivery.unknown_folder",
            f"{agency_id} does not deliver {dataset} (contracts/agencies.yaml), so nothing "
            "under this folder is loaded: check the dataset name, or onboard the dataset",
        )
    ]


def _keep(cursor: dict[str, FolderState], next_cursor: dict[str, FolderState], key: str) -> None:
    """Carry a folder's state over unchanged (not looked at, or not complete this tick)."""
    if key in cursor:
        next_cursor[key] = cursor[key]


def _keep_agency(
    cursor: dict[str, FolderState], next_cursor: dict[str, FolderState], agency_id: str
) -> None:
    for key, state in cursor.items():
        if key.startswith(f"{agency_id}/"):
            next_cursor[key] = state


def _in_turn(queues: list[list[_Candidate]], first: int = 0) -> list[_Candidate]:
    """Agencies' candidates interleaved (one of each in turn), days in order within each,
    the agency served first rotating with ``first`` (the tick): one agency's backlog cannot
    use up the tick's hash budget before the others, tick after tick."""
    if queues:
        shift = first % len(queues)
        queues = queues[shift:] + queues[:shift]
    order: list[_Candidate] = []
    for i in range(max((len(q) for q in queues), default=0)):
        order += [q[i] for q in queues if i < len(q)]
    return order


def scan_zone(
    landing_root: Path, agencies: Mapping[str, Collection[str]], now: float
) -> list[Finding]:
    """What lies outside every dataset folder: names under ``landing/`` that are no agency
    of the registry, and names under ``landing/<agency>/`` that are no dataset at all (the
    dataset sensors report the rest). ``agencies``: agency id -> datasets it delivers."""
    datasets = {d for delivered in agencies.values() for d in delivered}
    findings: list[Finding] = []
    try:
        root = open_zone(landing_root, [], zone=LANDING)
    except FileNotFoundError:
        return []
    with root:
        for entry in root.entries():
            if is_hidden_name(entry.name):
                if _age(entry, now) > HIDDEN_GRACE_SECONDS:
                    findings.append(_hidden(entry.name))
                continue
            if entry.name not in agencies:
                findings.append(
                    Finding(
                        entry.name,
                        "delivery.unknown_folder",
                        f"{entry.name!r} is no agency of the registry (contracts/agencies.yaml):"
                        " nothing under it is loaded; deliver into landing/<agency id>/",
                    )
                )
                continue
            if not entry.is_dir:
                findings.append(_refused(entry.name, entry, root, want="folder"))
                continue
            try:
                with root.subdir(entry.name) as agency:
                    for inner in agency.entries():
                        where = f"{entry.name}/{inner.name}"
                        if is_hidden_name(inner.name):
                            if _age(inner, now) > HIDDEN_GRACE_SECONDS:
                                findings.append(_hidden(where))
                        elif inner.name not in datasets:
                            findings.append(
                                Finding(
                                    where,
                                    "delivery.unknown_folder",
                                    f"{inner.name!r} is no dataset Flux loads: nothing under it "
                                    f"is loaded; deliver into landing/{entry.name}/<dataset>/ "
                                    f"with one of {', '.join(sorted(agencies[entry.name]))}",
                                )
                            )
            except (UnsafePath, OSError) as exc:
                findings.append(_finding(entry.name, exc))
    return findings


def record_findings(
    path: Path, section: str, findings: list[Finding], now: dt.datetime
) -> list[dict[str, str]]:
    """Replace ``section``'s findings in ``path`` (``<home>/landing_findings.json``) and
    return the merged ``unloadable`` list. Sensors run concurrently, so the read-modify-
    write holds a lock; the file is replaced atomically. ``first_seen`` survives ticks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(f".{path.name}.lock")
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            sections = dict(doc.get("sections", {}))
        except (OSError, ValueError, AttributeError):
            sections = {}
        before = {
            (f["path"], f["rule"]): f.get("first_seen", "")
            for f in sections.get(section, {}).get("unloadable", [])
        }
        stamp = now.isoformat(timespec="seconds")
        sections[section] = {
            "checked_at": stamp,
            "unloadable": [
                {**asdict(f), "first_seen": before.get((f.path, f.rule)) or stamp}
                for f in sorted(findings, key=lambda f: (f.path, f.rule))
            ],
        }
        merged = sorted(
            ({**f, "seen_by": name} for name, s in sections.items() for f in s["unloadable"]),
            key=lambda f: (f["path"], f["rule"]),
        )
        text = json.dumps(
            {"updated_at": stamp, "unloadable": merged, "sections": sections}, indent=2
        )
        write_atomic(path, text)
    return merged


def group_runs(deliveries: list[Delivery]) -> list[list[Delivery]]:
    """Consecutive days of one agency together (one single-run backfill each)."""
    groups: list[list[Delivery]] = []
    for d in sorted(deliveries, key=lambda d: (d.agency.id, d.day)):
        last = groups[-1][-1] if groups else None
        if last and last.agency.id == d.agency.id and d.day - last.day == dt.timedelta(days=1):
            groups[-1].append(d)
        else:
            groups.append([d])
    return groups


def run_request(dataset: str, group: list[Delivery]) -> dg.RunRequest:
    """One run of the agency's job (in-process, one writer) for a group of days."""
    agency = group[0].agency
    fingerprint = hashlib.sha256("".join(d.state.fingerprint for d in group).encode()).hexdigest()
    stats = "".join(f"{n}={s};" for d in group for n, (s, _) in sorted(d.state.files.items()))
    # surrogateescape: a file name that is not UTF-8 must not fail the whole tick
    written = hashlib.sha256(stats.encode("utf-8", "surrogateescape")).hexdigest()
    first, last = group[0].day.isoformat(), group[-1].day.isoformat()
    span = first if first == last else f"{first}..{last}"
    tags = {"agency": agency.key, "dataset": dataset, DELIVERY_TAG: fingerprint[:16]}
    partition_key = first if first == last else None
    if partition_key is None:
        tags |= {RANGE_START_TAG: first, RANGE_END_TAG: last}
    return dg.RunRequest(
        run_key=f"{agency.id}/{dataset}/{span}/{fingerprint[:16]}-{written[:8]}",
        job_name=agency_job_name(agency),
        asset_selection=list(asset_keys(agency, dataset)),
        tags=tags,
        run_config=CONSOLE_RUN_CONFIG,
        partition_key=partition_key,
    )


def encode_cursor(cursor: dict[str, FolderState]) -> str:
    return json.dumps({k: [v.fingerprint, v.files] for k, v in cursor.items()}, sort_keys=True)


def decode_cursor(raw: str | None) -> dict[str, FolderState]:
    if not raw:
        return {}
    return {
        key: FolderState(fp, {name: (stat, sha) for name, (stat, sha) in files.items()})
        for key, (fp, files) in json.loads(raw).items()
    }


def zone_steward(registry: Registry) -> str:
    """The dataset whose sensor also reports what lies outside every dataset folder (one
    sensor, so each such finding is reported once)."""
    return min(d for a in registry.agencies for d in a.datasets)


def build_landing_sensor(
    dataset: str, registry: Registry, jobs: dict[str, dg.UnresolvedAssetJobDefinition]
) -> dg.SensorDefinition:
    agencies = registry.agencies_for(dataset)
    others = [a.id for a in registry.agencies if dataset not in a.datasets]
    steward = dataset == zone_steward(registry)
    delivered = {a.id: a.datasets for a in registry.agencies}
    contract = registry.latest(dataset)
    name = landing_sensor_name(dataset)

    @dg.sensor(
        name=name,
        description=f"Watches landing/<agency>/{dataset}/<YYYY-MM-DD>/ for new or corrected "
        f"{contract.title} deliveries ({len(agencies)} agencies) and loads each complete "
        "changed day; reports what under landing/ it will not load.",
        jobs=[jobs[a.id] for a in agencies],
        minimum_interval_seconds=TICK_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        tags={"domain": contract.domain, "dataset": dataset},
    )
    def _sensor(context: dg.SensorEvaluationContext, warehouse: FluxWarehouse) -> dg.SensorResult:
        cursor = decode_cursor(context.cursor)
        policy = landing_policy()
        now = time.time()
        changed, next_cursor, bad, loaded, findings, waiting = scan_dataset(
            warehouse.landing_root,
            dataset,
            agencies,
            cursor,
            now=now,
            quiet_seconds=policy.quiet_seconds,
            receipt_for=lambda agency, day: read_receipt(
                warehouse.receipt_path(agency.id, dataset, day)
            ),
            marker_required=policy.require_marker,
            others=others,
        )
        if loaded:
            context.log.info(
                f"{len(loaded)} {dataset} delivery folder(s) already loaded with this content "
                "(delivery receipt), not run again: "
                + ", ".join(f"{d.agency.id}/{d.day}" for d in loaded[:MAX_LOGGED])
                + (" ..." if len(loaded) > MAX_LOGGED else "")
            )
        if bad:
            context.log.warning(
                f"ignored landing folder(s) that are not a delivery day: "
                f"{', '.join(bad[:MAX_LOGGED])}; deliver into "
                "landing/<agency>/<dataset>/<YYYY-MM-DD>/, a day from the agency's onboarding "
                "(contracts/agencies.yaml) to tomorrow"
            )
        if waiting:
            context.log.info(
                f"{len(waiting)} complete folder(s) wait for the next tick (at most "
                f"{HASH_BUDGET_BYTES >> 20} MiB hashed a tick): {', '.join(waiting[:MAX_LOGGED])}"
            )
        noted = _report_findings(context, warehouse.root, name, findings, steward, delivered, now)
        groups = group_runs(changed)
        deferred = groups[MAX_RUNS_PER_TICK:]
        for group in deferred:  # not yet requested: forget them so the next tick does
            for d in group:
                key = f"{d.agency.id}/{d.day.isoformat()}"
                if key in cursor:
                    next_cursor[key] = cursor[key]
                else:
                    next_cursor.pop(key, None)
        requests = [run_request(dataset, g) for g in groups[:MAX_RUNS_PER_TICK]]
        if not requests:
            already = f" ({len(loaded)} already loaded, per their receipts)" if loaded else ""
            return dg.SensorResult(
                skip_reason=dg.SkipReason(f"no new or changed {dataset} delivery{already}{noted}"),
                cursor=encode_cursor(next_cursor),
            )
        return dg.SensorResult(run_requests=requests, cursor=encode_cursor(next_cursor))

    return _sensor


def _report_findings(
    context: dg.SensorEvaluationContext,
    home: Path,
    section: str,
    findings: list[Finding],
    steward: bool,
    delivered: Mapping[str, Collection[str]],
    now: float,
) -> str:
    """Log the tick's findings, record them in ``<home>/landing_findings.json``, and return
    the skip-reason suffix naming them ('' when there are none)."""
    zone = scan_zone(home / LANDING, delivered, now) if steward else []
    findings = [_printable(f) for f in findings]
    zone = [_printable(f) for f in zone]
    path = home / FINDINGS_FILE
    stamp = dt.datetime.fromtimestamp(now, dt.UTC)
    try:
        merged = record_findings(path, section, findings, stamp)
        if steward:
            merged = record_findings(path, ZONE_SECTION, zone, stamp)
    except OSError as exc:  # the operator's home, not an agency's doing: say so, go on
        context.log.error(f"could not record landing findings in {path}: {exc}")
    else:
        share_with_agencies(context, home, merged, delivered)
    everything = findings + zone
    if not everything:
        return ""
    context.log.warning(
        f"{len(everything)} entr{'y' if len(everything) == 1 else 'ies'} under landing/ "
        "that Flux will not load: "
        + "; ".join(f"{f.path}: {f.reason} [{f.rule}]" for f in everything[:MAX_LOGGED])
        + (" ..." if len(everything) > MAX_LOGGED else "")
        + f" (all of them: {path}, 'unloadable')"
    )
    shown = ", ".join(f"{f.path} [{f.rule}]" for f in everything[:3])
    more = " ..." if len(everything) > 3 else ""
    return f"; not loaded: {shown}{more} (see {FINDINGS_FILE})"


def share_with_agencies(
    context: dg.SensorEvaluationContext,
    home: Path,
    merged: list[dict[str, str]],
    agencies: Collection[str],
) -> None:
    """Each agency's own findings in ``outbox/<agency>/landing_findings.json`` (where its
    reports are), removed once none is left; written only when they change."""
    from flux_pipelines.reports.report import write_outbox_file

    outbox = outbox_root(home)
    by_agency: dict[str, list[dict[str, str]]] = {}
    for finding in merged:
        by_agency.setdefault(finding["path"].split("/", 1)[0], []).append(finding)
    for agency in agencies:
        mine = by_agency.get(agency, [])
        if not mine and not os.path.lexists(outbox / agency / FINDINGS_FILE):
            continue  # nothing to share, nothing to remove: no folder opened, none made
        data = (
            json.dumps({"agency": agency, "unloadable": mine}, indent=2).encode() if mine else None
        )
        try:
            write_outbox_file(outbox, agency, FINDINGS_FILE, data)
        except (OSError, UnsafePath) as exc:  # that agency's outbox only: say so, go on
            context.log.error(f"could not share landing findings with {agency}: {exc}")


def _printable(finding: Finding) -> Finding:
    """A finding whose names are text: bytes of a file name that are not UTF-8 become
    ``\\xNN`` (a name is bytes on POSIX; logs, JSON and the UI need text)."""

    def text(value: str) -> str:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")

    return Finding(text(finding.path), finding.rule, text(finding.reason))


def landing_sensors(
    registry: Registry, jobs: dict[str, dg.UnresolvedAssetJobDefinition]
) -> list[dg.SensorDefinition]:
    """One sensor per dataset; ``jobs`` maps agency id to its ingest job."""
    datasets = sorted({d for a in registry.agencies for d in a.datasets})
    return [build_landing_sensor(d, registry, jobs) for d in datasets]
