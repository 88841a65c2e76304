"""Delivery receipts: which content of an (agency, dataset, day) delivery was last loaded.

Whatever loads a day (a sensor's run, ``flux demo``, ``flux load``, a backfill: they all go
through the ingest step) writes ``<home>/receipts/<agency>/<dataset>/<day>.json``
(``FluxWarehouse.receipt_path``) holding the delivery's *fingerprint*, the status (loaded /
rejected), the run id and the time. A landing sensor that finds a folder its cursor does not
know (a fresh cursor after ``flux demo``, say) asks the receipt before requesting a run, so
content that was loaded already is not loaded again.

The fingerprint is the landing sensor's, computed here and nowhere else: the sha256 of the
JSON object {file name: sha256 of the file's bytes} (keys sorted) over the folder's data
files and its manifest (``delivery_files``).

The sensor must not read big files on its tick (its cost must not grow with file size), so
it identifies a file larger than ``HASH_MAX_BYTES``, and any entry that is not a regular file
(a link, a sub-folder: never followed, never read), by a *stat token* instead of its sha256
(``entry_token``). A receipt therefore also records each file's size, mtime and inode as they
were when the load read it whole (``stats``), and ``Receipt.sensor_fingerprint`` is the
fingerprint as the sensor computes it. Folders are listed and files opened confined to the
agency's landing folder (``confine.py``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from flux_pipelines.errors import UnsafePath
from flux_pipelines.files import sha256_file, write_atomic
from flux_pipelines.ingest.confine import (
    LANDING,
    ConfinedDir,
    Entry,
    landing_root_of,
    open_dir_under,
    stat_key,
)
from flux_pipelines.ingest.delivery import is_data_file_name
from flux_pipelines.ingest.manifest import MANIFEST_NAMES
from flux_pipelines.ingest.readers import read_stat

RECEIPT_STATUSES = ("loaded", "rejected")
# Files up to this size are identified by content (sha256) on the sensor's tick; larger
# ones by size, mtime and inode: a tick never reads more than this of any one file.
HASH_MAX_BYTES = 16 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class DeliveryContents(dict[str, str]):
    """{file name: sha256 (or stat token)} of a delivery, plus ``stats``: each regular
    file's stat key (``confine.stat_key``) as it was when its content was hashed."""

    def __init__(
        self, contents: Mapping[str, str] | None = None, stats: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(contents or {})
        self.stats: dict[str, str] = dict(stats or {})


def entry_token(entry: Entry) -> str | None:
    """How the sensor identifies an entry without reading it; None: by its sha256 (a regular
    file small enough to hash on a tick)."""
    if entry.is_file:
        return None if entry.stat.st_size <= HASH_MAX_BYTES else f"stat:{stat_key(entry.stat)}"
    kind = "link" if entry.is_link else "folder" if entry.is_dir else "special"
    return f"{kind}:{stat_key(entry.stat)}"


@dataclass(frozen=True)
class Receipt:
    """What the last load of a delivery day saw and did."""

    agency: str
    dataset: str
    day: str
    fingerprint: str
    files: dict[str, str]  # file name -> sha256, the manifest included
    status: str  # loaded | rejected
    run_id: str
    written_at: dt.datetime  # UTC
    stats: dict[str, str] = field(default_factory=dict)  # file name -> stat key when read

    @property
    def sensor_fingerprint(self) -> str:
        """The fingerprint the landing sensor computes for the loaded content: a file bigger
        than ``HASH_MAX_BYTES`` counts by its stat token (a big file whose stat the receipt
        does not know keeps its sha256, which the sensor never computes: no match)."""
        view = {}
        for name, value in self.files.items():
            key = self.stats.get(name)
            if key is not None and _SHA256.match(value) and int(key.split(":")[0]) > HASH_MAX_BYTES:
                value = f"stat:{key}"
            view[name] = value
        return fingerprint(view)

    def to_json(self) -> str:
        return json.dumps(
            {
                "agency": self.agency,
                "dataset": self.dataset,
                "day": self.day,
                "fingerprint": self.fingerprint,
                "files": dict(sorted(self.files.items())),
                "status": self.status,
                "run_id": self.run_id,
                "written_at": self.written_at.isoformat(),
                "stats": dict(sorted(self.stats.items())),
            },
            indent=2,
        )


def is_delivery_name(name: str) -> bool:
    """Data names and the manifest: everything whose change means a new delivery."""
    return is_data_file_name(name) or name in MANIFEST_NAMES


def _entries(folder: Path) -> list[Entry]:
    """The delivery's entries with their ``lstat`` (links are not followed); none when the
    day folder is missing or is itself not confined (such a day is rejected whole)."""
    try:
        with open_dir_under(landing_root_of(folder, 3), folder, zone=LANDING) as opened:
            return [e for e in opened.entries() if is_delivery_name(e.name)]
    except (UnsafePath, OSError):
        return []


def delivery_files(folder: Path) -> list[Path]:
    """Data entries plus the manifest: everything whose change means a new delivery (a link
    or sub-folder under a data name included: it is part of what was delivered)."""
    return [folder / e.name for e in _entries(folder)]


def hash_confined(folder: ConfinedDir, name: str) -> tuple[str, str] | None:
    """(sha256, stat key) of the regular file ``name`` read whole through ``folder``; None
    when it changed while being read (being written: try later)."""
    with folder.open_file(name) as handle, handle.reopen() as reader:
        digest = sha256_file(reader)
        if handle.changed() is not None:
            return None
        return digest, stat_key(handle.stat)


def fingerprint(contents: Mapping[str, str]) -> str:
    """The delivery's fingerprint from {file name: sha256} (data files and manifest)."""
    return hashlib.sha256(json.dumps(dict(contents), sort_keys=True).encode()).hexdigest()


def delivery_contents(
    folder: Path, known: Mapping[str, str | None] | None = None
) -> DeliveryContents:
    """{file name: sha256} of the folder's data files and manifest, with each file's stat
    as the load read it (``DeliveryContents.stats``, for ``Receipt.sensor_fingerprint``).

    ``known`` holds hashes already computed (by the load); a small file it does not cover
    (the manifest, a file the load did not hash) is hashed here. Names in ``known`` that are not
    in the folder (a file a manifest lists but that never arrived) are left out: the
    fingerprint is of what is in the folder.
    """
    known = known or {}
    contents = DeliveryContents()
    for entry in _entries(folder):
        token = entry_token(entry)
        sha = known.get(entry.name)
        if not entry.is_file or (token is not None and not sha):
            # Not read by the load (a link, a sub-folder, a big file rejected unread), and
            # not read here: marked so that no sensor state ever matches it, since it may
            # have changed after the load looked (the day then loads once more, harmlessly).
            contents[entry.name] = f"unread:{token}"
        elif sha:
            contents[entry.name] = sha
            seen = read_stat(folder / entry.name, sha)  # the stat the load read it at
            if seen is not None:
                contents.stats[entry.name] = seen
        else:
            hashed = _hash_entry(folder, entry.name)
            if hashed is None:  # gone, replaced or changing: identified by its stat
                contents[entry.name] = f"stat:{stat_key(entry.stat)}"
            else:
                contents[entry.name], contents.stats[entry.name] = hashed
    return contents


def _hash_entry(folder: Path, name: str) -> tuple[str, str] | None:
    try:
        with open_dir_under(landing_root_of(folder, 3), folder, zone=LANDING) as opened:
            return hash_confined(opened, name)
    except (UnsafePath, OSError):
        return None


def write_receipt(
    path: Path,
    *,
    agency: str,
    dataset: str,
    day: str | dt.date,
    contents: Mapping[str, str],
    status: str,
    run_id: str,
    written_at: dt.datetime | None = None,
) -> Receipt:
    """Write (replace) the day's receipt atomically (``files.write_atomic``).

    ``contents`` from ``delivery_contents`` also carries each file's stat when read
    (``DeliveryContents.stats``), so the sensor can match big files without hashing them.
    """
    if status not in RECEIPT_STATUSES:
        raise ValueError(f"receipt status must be one of {RECEIPT_STATUSES}, not {status!r}")
    receipt = Receipt(
        agency=agency,
        dataset=dataset,
        day=day.isoformat() if isinstance(day, dt.date) else day,
        fingerprint=fingerprint(contents),
        files=dict(contents),
        status=status,
        run_id=run_id,
        written_at=written_at or dt.datetime.now(dt.UTC),
        stats=dict(getattr(contents, "stats", {})),
    )
    # Not durable: a receipt lost in a power cut only makes the sensor load the day again
    # (idempotent); a sync per day is a disk flush per day in a year-long backfill.
    write_atomic(path, receipt.to_json())
    return receipt


def read_receipt(path: Path) -> Receipt | None:
    """The receipt at ``path``; None when there is none or it cannot be read (a receipt
    only ever saves work, so an unreadable one means: load again)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        written_at = dt.datetime.fromisoformat(doc["written_at"])
        if written_at.tzinfo is None:
            written_at = written_at.replace(tzinfo=dt.UTC)
        return Receipt(
            agency=str(doc["agency"]),
            dataset=str(doc["dataset"]),
            day=str(doc["day"]),
            fingerprint=str(doc["fingerprint"]),
            files={str(k): str(v) for k, v in doc["files"].items()},
            status=str(doc["status"]),
            run_id=str(doc["run_id"]),
            written_at=written_at,
            stats={str(k): str(v) for k, v in doc.get("stats", {}).items()},
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
