"""Delivery receipts: which content of an (agency, dataset, day) delivery was last loaded.

Whatever loads a day (a sensor's run, ``flux demo``, ``flux load``, a backfill: they all go
through the ingest step) writes ``<home>/warehouse/<agency>/receipts/<dataset>/<day>.json``
(``FluxWarehouse.receipt_path``) holding the delivery's *fingerprint*, the status (loaded /
rejected), the run id and the time. A landing sensor that finds a folder its cursor does not
know (a fresh cursor after ``flux demo``, say) asks the receipt before requesting a run, so
content that was loaded already is not loaded again.

The fingerprint is the landing sensor's, computed here and nowhere else: the sha256 of the
JSON object {file name: sha256 of the file's bytes} (keys sorted) over the folder's data
files and its manifest (``delivery_files``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from flux_pipelines.ingest.delivery import is_data_file_name
from flux_pipelines.ingest.manifest import MANIFEST_NAMES

RECEIPT_STATUSES = ("loaded", "rejected")


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
            },
            indent=2,
        )


def delivery_files(folder: Path) -> list[Path]:
    """Data files plus the manifest: everything whose change means a new delivery."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and (is_data_file_name(p.name) or p.name in MANIFEST_NAMES)
    )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(contents: Mapping[str, str]) -> str:
    """The delivery's fingerprint from {file name: sha256} (data files and manifest)."""
    return hashlib.sha256(json.dumps(dict(contents), sort_keys=True).encode()).hexdigest()


def delivery_contents(
    folder: Path, known: Mapping[str, str | None] | None = None
) -> dict[str, str]:
    """{file name: sha256} of the folder's data files and manifest.

    ``known`` holds hashes already computed (by the load); a file it does not cover (the
    manifest, a file the load did not hash) is hashed here. Names in ``known`` that are not
    in the folder (a file a manifest lists but that never arrived) are left out: the
    fingerprint is of what is in the folder.
    """
    known = known or {}
    return {p.name: known.get(p.name) or sha256_file(p) for p in delivery_files(folder)}


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
    """Write (replace) the day's receipt atomically: written aside, then ``os.replace``."""
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
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        # No fsync: a receipt lost in a power cut only makes the sensor load the day again
        # (idempotent); a sync per day is a disk flush per day in a year-long backfill.
        tmp.write_text(receipt.to_json(), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
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
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
