"""Landing-zone sensors: one per dataset, a run per new or corrected (agency, day) delivery.

Each tick lists ``landing/<agency>/<dataset>/<day>/`` for every agency that delivers the
dataset and compares each folder with the cursor:

- A folder is *ready* when no data file changed within ``quiet_seconds`` (a file still
  being copied keeps changing) and, if it has a manifest, every listed file is present (or
  the manifest is older than ``manifest_grace_seconds``: the load then rejects the missing
  files with a reason). Hidden and temporary names (``.x``, ``_x``, ``*.tmp``, ``*.part``)
  are never data.
- Its *fingerprint* is the sha256 of every file's name and content hash (manifest
  included). A file is re-hashed only when its size or mtime changed.
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
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import dagster as dg

from flux_pipelines.assets.ingest_factory import asset_keys
from flux_pipelines.contracts.registry import Agency, Registry
from flux_pipelines.ingest.delivery import is_data_file_name
from flux_pipelines.ingest.manifest import ManifestInvalid, manifest_path, read_manifest
from flux_pipelines.ingest.receipts import (
    Receipt,
    delivery_files,
    fingerprint,
    read_receipt,
    sha256_file,
)
from flux_pipelines.jobs import agency_job_name
from flux_pipelines.names import RANGE_END_TAG, RANGE_START_TAG
from flux_pipelines.resources.warehouse import FluxWarehouse

QUIET_SECONDS = 2.0
MANIFEST_GRACE_SECONDS = 600.0
MAX_RUNS_PER_TICK = 50
DELIVERY_TAG = "flux/delivery"


@dataclass(frozen=True)
class FolderState:
    """What the cursor remembers of one delivery folder."""

    fingerprint: str  # names and content hashes: decides whether to run
    files: dict[str, tuple[str, str]]  # name -> (size:mtime, sha256); re-hash on stat change


@dataclass(frozen=True)
class Delivery:
    agency: Agency
    day: dt.date
    state: FolderState


def landing_sensor_name(dataset: str) -> str:
    return f"landing_{dataset}"


def _stat_key(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def is_ready(folder: Path, files: list[Path], now: float, quiet_seconds: float) -> bool:
    """No file changed recently, and every file a manifest lists has arrived."""
    if not any(is_data_file_name(p.name) for p in files):
        return False
    if any(now - p.stat().st_mtime < quiet_seconds for p in files):
        return False
    manifest = manifest_path(folder)
    if manifest is None:
        return True
    try:
        listed = {f.name for f in read_manifest(manifest).files}
    except ManifestInvalid:
        return True  # the load rejects the delivery with the manifest's problem
    present = {p.name for p in files}
    return listed <= present or now - manifest.stat().st_mtime > MANIFEST_GRACE_SECONDS


def folder_state(files: list[Path], previous: FolderState | None) -> FolderState:
    known = previous.files if previous else {}
    state: dict[str, tuple[str, str]] = {}
    for path in files:
        stat = _stat_key(path)
        seen = known.get(path.name)
        state[path.name] = (stat, seen[1] if seen and seen[0] == stat else sha256_file(path))
    return FolderState(fingerprint({name: sha for name, (_, sha) in state.items()}), state)


def loaded_already(receipt: Receipt | None, state: FolderState, files: list[Path]) -> bool:
    """The receipt says this very content was loaded after the files last changed."""
    if receipt is None or receipt.fingerprint != state.fingerprint:
        return False
    changed = max(p.stat().st_ctime for p in files)
    return receipt.written_at.timestamp() > changed


def _parse_day(name: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(name)
    except ValueError:
        return None


ReceiptLookup = Callable[[Agency, dt.date], Receipt | None]


class Scan(NamedTuple):
    changed: list[Delivery]  # new or changed ready deliveries: to run
    cursor: dict[str, FolderState]  # the next cursor
    bad_names: list[str]  # folder names that are not days in range
    loaded: list[Delivery]  # new or changed, but their receipt says loaded already


def scan_dataset(
    landing_root: Path,
    dataset: str,
    agencies: list[Agency],
    cursor: dict[str, FolderState],
    *,
    now: float,
    quiet_seconds: float,
    receipt_for: ReceiptLookup | None = None,
) -> Scan:
    """Compare the landing folders with the cursor (and, for a new or changed folder, with
    its delivery receipt when ``receipt_for`` is given)."""
    changed: list[Delivery] = []
    loaded: list[Delivery] = []
    next_cursor: dict[str, FolderState] = {}
    bad_names: list[str] = []
    last = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    for agency in agencies:
        first = agency.onboarded  # the agency's partitions start there
        root = landing_root / agency.id / dataset
        if not root.is_dir():
            continue
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            key = f"{agency.id}/{folder.name}"
            day = _parse_day(folder.name)
            if day is None or not first <= day <= last:
                if not folder.name.startswith(".") and key not in cursor:
                    bad_names.append(f"{root.name}/{folder.name}")
                continue
            previous = cursor.get(key)
            files = delivery_files(folder)
            if not is_ready(folder, files, now, quiet_seconds):
                if previous is not None:
                    next_cursor[key] = previous
                continue
            state = folder_state(files, previous)
            next_cursor[key] = state
            if previous is None or previous.fingerprint != state.fingerprint:
                delivery = Delivery(agency, day, state)
                if receipt_for is not None and loaded_already(
                    receipt_for(agency, day), state, files
                ):
                    loaded.append(delivery)
                else:
                    changed.append(delivery)
    return Scan(changed, next_cursor, bad_names, loaded)


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
    written = hashlib.sha256(stats.encode()).hexdigest()  # same files -> same key
    first, last = group[0].day.isoformat(), group[-1].day.isoformat()
    span = first if first == last else f"{first}..{last}"
    tags = {"agency": agency.key, "dataset": dataset, DELIVERY_TAG: fingerprint[:16]}
    if first == last:
        partition = {"partition_key": first}
    else:
        partition = {}
        tags |= {RANGE_START_TAG: first, RANGE_END_TAG: last}
    return dg.RunRequest(
        run_key=f"{agency.id}/{dataset}/{span}/{fingerprint[:16]}-{written[:8]}",
        job_name=agency_job_name(agency),
        asset_selection=list(asset_keys(agency, dataset)),
        tags=tags,
        **partition,
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


def build_landing_sensor(
    dataset: str, registry: Registry, jobs: dict[str, dg.UnresolvedAssetJobDefinition]
) -> dg.SensorDefinition:
    agencies = [a for a in registry.agencies if dataset in a.datasets]
    contract = registry.latest(dataset)

    @dg.sensor(
        name=landing_sensor_name(dataset),
        description=f"Watches landing/<agency>/{dataset}/<YYYY-MM-DD>/ for new or corrected "
        f"{contract.title} deliveries ({len(agencies)} agencies) and loads each changed day.",
        jobs=[jobs[a.id] for a in agencies],
        minimum_interval_seconds=15,
        default_status=dg.DefaultSensorStatus.RUNNING,
        tags={"domain": contract.domain, "dataset": dataset},
    )
    def _sensor(context: dg.SensorEvaluationContext, warehouse: FluxWarehouse) -> dg.SensorResult:
        cursor = decode_cursor(context.cursor)
        changed, next_cursor, bad, loaded = scan_dataset(
            warehouse.landing_root,
            dataset,
            agencies,
            cursor,
            now=time.time(),
            quiet_seconds=QUIET_SECONDS,
            receipt_for=lambda agency, day: read_receipt(
                warehouse.receipt_path(agency.id, dataset, day)
            ),
        )
        if loaded:
            context.log.info(
                f"{len(loaded)} {dataset} delivery folder(s) already loaded with this content "
                "(delivery receipt), not run again: "
                + ", ".join(f"{d.agency.id}/{d.day}" for d in loaded[:10])
                + (" ..." if len(loaded) > 10 else "")
            )
        if bad:
            context.log.warning(
                f"ignored landing folder(s) that are not a delivery day: {', '.join(bad[:10])}; "
                "deliver into landing/<agency>/<dataset>/<YYYY-MM-DD>/, a day from the "
                "agency's onboarding (contracts/agencies.yaml) to tomorrow"
            )
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
                skip_reason=dg.SkipReason(f"no new or changed {dataset} delivery{already}"),
                cursor=encode_cursor(next_cursor),
            )
        return dg.SensorResult(run_requests=requests, cursor=encode_cursor(next_cursor))

    return _sensor


def landing_sensors(
    registry: Registry, jobs: dict[str, dg.UnresolvedAssetJobDefinition]
) -> list[dg.SensorDefinition]:
    """One sensor per dataset; ``jobs`` maps agency id to its ingest job."""
    datasets = sorted({d for a in registry.agencies for d in a.datasets})
    return [build_landing_sensor(d, registry, jobs) for d in datasets]
