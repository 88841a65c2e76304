"""The landing sensors as the daemon runs them: real sensor definitions from ``defs``, a real
landing zone under tmp_path, ticks chained through the cursor each tick returns.

Quiet periods are never slept through: file mtimes are set in the past (ready) or to now
(still being written) with ``os.utime``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.definitions import defs
from flux_pipelines.defs.ingest import landing
from flux_pipelines.defs.ingest.assets import asset_keys
from flux_pipelines.defs.ingest.landing import (
    DELIVERY_TAG,
    MANIFEST_GRACE_SECONDS,
    QUIET_SECONDS,
    RANGE_END_TAG,
    RANGE_START_TAG,
    FolderState,
    decode_cursor,
    encode_cursor,
    scan_dataset,
)
from flux_pipelines.ingest.delivery import IGNORED_PREFIXES, TEMPORARY_SUFFIXES
from flux_pipelines.ingest.manifest import write_manifest
from flux_pipelines.ingest.receipts import delivery_contents, read_receipt, write_receipt
from flux_pipelines.names import agency_db, agency_receipts
from flux_pipelines.ops.logs import CONSOLE_RUN_CONFIG
from flux_pipelines.resources.warehouse import FluxWarehouse
from flux_pipelines_tests.conftest import check_results, deliver

REPO = defs.get_repository_def()
DAY = "2026-02-02"
OLD = 120.0  # seconds: well past the quiet period


@dataclass(frozen=True)
class Tick:
    requests: list[dg.RunRequest]
    cursor: str
    skip: str | None


@pytest.fixture
def instance() -> dg.DagsterInstance:
    return dg.DagsterInstance.ephemeral()


def tick(
    home: Path,
    instance: dg.DagsterInstance,
    cursor: str | None = None,
    sensor: str = "landing_meteorites",
) -> Tick:
    """One evaluation of the shipped sensor, as the daemon does it."""
    context = dg.build_sensor_context(
        cursor=cursor,
        resources={"warehouse": FluxWarehouse(home=str(home))},
        instance=instance,
        repository_def=REPO,
    )
    data = REPO.get_sensor_def(sensor).evaluate_tick(context)
    return Tick(list(data.run_requests or []), data.cursor or "", data.skip_message)


def folder(home: Path, day: str = DAY, agency: str = "nasa", dataset: str = "meteorites") -> Path:
    return home / "landing" / agency / dataset / day


def set_age(path: Path, seconds: float) -> None:
    """Make a file (or every file of a folder) look last written ``seconds`` ago."""
    stamp = time.time() - seconds
    for p in [path] if path.is_file() else list(path.iterdir()):
        os.utime(p, (stamp, stamp))


def land(
    home: Path,
    day: str = DAY,
    *,
    agency: str = "nasa",
    dataset: str = "meteorites",
    rows: int = 40,
    seed: int = 1,
    age: float = OLD,
) -> Path:
    """A seeded delivery of one agency's dataset for a day, old enough to be picked up."""
    deliver(home, agency, dataset, day, rows=rows, seed=seed)
    target = folder(home, day, agency, dataset)
    set_age(target, age)
    return target


def content_hash(target: Path, names: list[str]) -> str:
    """The folder fingerprint computed independently: sha256 over name -> sha256(bytes)."""
    contents = {n: hashlib.sha256((target / n).read_bytes()).hexdigest() for n in names}
    return hashlib.sha256(json.dumps(contents, sort_keys=True).encode()).hexdigest()


def delivery_hash(*fingerprints: str) -> str:
    return hashlib.sha256("".join(fingerprints).encode()).hexdigest()[:16]


# --- one delivery -------------------------------------------------------------------------------


def test_new_delivery_requests_one_run_keyed_by_its_content(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    target = land(tmp_path)
    fingerprint = content_hash(target, ["meteorites.csv"])

    first = tick(tmp_path, instance)

    [request] = first.requests
    nasa = load_registry().agency("nasa")
    assert request.job_name == "ingest_nasa"
    assert request.partition_key == DAY
    assert request.asset_selection == list(asset_keys(nasa, "meteorites"))
    assert request.tags["agency"] == "nasa" and request.tags["dataset"] == "meteorites"
    assert request.tags["dagster/partition"] == DAY
    assert request.tags[DELIVERY_TAG] == delivery_hash(fingerprint)
    assert request.run_key is not None
    assert request.run_key.startswith(f"nasa/meteorites/{DAY}/{delivery_hash(fingerprint)}")
    # the run starts the code location's console logger (JSON lines in JSON mode)
    assert request.run_config == CONSOLE_RUN_CONFIG
    # the cursor remembers the folder: its fingerprint and each file's stat and sha256
    sha = hashlib.sha256((target / "meteorites.csv").read_bytes()).hexdigest()
    state = decode_cursor(first.cursor)[f"nasa/{DAY}"]
    assert state.fingerprint == fingerprint
    assert {name: value[1] for name, value in state.files.items()} == {"meteorites.csv": sha}


def test_tick_with_nothing_changed_requests_nothing(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    land(tmp_path)
    first = tick(tmp_path, instance)
    assert len(first.requests) == 1

    second = tick(tmp_path, instance, first.cursor)

    assert second.requests == []
    assert second.skip == "no new or changed meteorites delivery"
    assert second.cursor == first.cursor


def test_identical_redelivery_is_not_run_again(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    target = land(tmp_path)
    first = tick(tmp_path, instance)
    csv = target / "meteorites.csv"
    before = decode_cursor(first.cursor)[f"nasa/{DAY}"]

    csv.write_bytes(csv.read_bytes())  # the agency sends the same bytes again
    set_age(csv, OLD / 2)  # a different mtime, still past the quiet period
    second = tick(tmp_path, instance, first.cursor)

    assert second.requests == []
    after = decode_cursor(second.cursor)[f"nasa/{DAY}"]
    assert after.fingerprint == before.fingerprint
    # the new stat is remembered (no re-hash next time), the content hash is the same
    assert after.files["meteorites.csv"][0] != before.files["meteorites.csv"][0]
    assert after.files["meteorites.csv"][1] == before.files["meteorites.csv"][1]


def test_same_files_give_the_same_run_key(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    """A tick re-evaluated from the same cursor (the daemon died before saving the new one)
    asks for the same run key, so Dagster does not launch the run twice."""
    land(tmp_path)
    [first] = tick(tmp_path, instance).requests
    [again] = tick(tmp_path, instance).requests
    assert (again.run_key, again.tags) == (first.run_key, first.tags)


def test_corrected_delivery_gets_a_new_run_key(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    target = land(tmp_path, seed=1)
    first = tick(tmp_path, instance)
    [original] = first.requests

    land(tmp_path, seed=2)  # corrected rows, same file name
    second = tick(tmp_path, instance, first.cursor)

    [corrected] = second.requests
    assert corrected.partition_key == DAY and corrected.job_name == "ingest_nasa"
    assert corrected.run_key != original.run_key
    fingerprint = content_hash(target, ["meteorites.csv"])
    assert corrected.tags[DELIVERY_TAG] == delivery_hash(fingerprint) != original.tags[DELIVERY_TAG]
    assert decode_cursor(second.cursor)[f"nasa/{DAY}"].fingerprint == fingerprint


def test_delivery_reverted_to_earlier_content_runs_again(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """A, then a correction B, then A again: the partition must end up holding A.

    Dagster skips any request whose run key an earlier run of the sensor already used, so
    the third request must not reuse the first one's key.
    """
    target = land(tmp_path, seed=1)
    version_a = (target / "meteorites.csv").read_bytes()
    ticks = [tick(tmp_path, instance)]
    land(tmp_path, seed=2, age=OLD - 10)
    ticks.append(tick(tmp_path, instance, ticks[-1].cursor))
    (target / "meteorites.csv").write_bytes(version_a)
    set_age(target, OLD - 20)
    ticks.append(tick(tmp_path, instance, ticks[-1].cursor))

    keys = [t.requests[0].run_key for t in ticks if len(t.requests) == 1]
    assert len(keys) == 3, "every change of content requests a run"
    assert len(set(keys)) == 3, f"a run key was reused, Dagster would skip the run: {keys}"
    # the content tag says which content the run loads: A again
    assert ticks[2].requests[0].tags[DELIVERY_TAG] == ticks[0].requests[0].tags[DELIVERY_TAG]


def test_corrected_manifest_alone_is_a_new_delivery(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    target = land(tmp_path, rows=40)
    write_manifest(target, {"meteorites.csv": 41})
    set_age(target, OLD)
    first = tick(tmp_path, instance)
    assert len(first.requests) == 1

    write_manifest(target, {"meteorites.csv": 40})
    set_age(target, OLD)
    [request] = tick(tmp_path, instance, first.cursor).requests

    assert request.run_key != first.requests[0].run_key
    fingerprint = content_hash(target, ["manifest.json", "meteorites.csv"])
    assert request.tags[DELIVERY_TAG] == delivery_hash(fingerprint)


# --- what is not (yet) a delivery ---------------------------------------------------------------

TEMPORARY_NAMES = [f"meteorites.csv{s}" for s in TEMPORARY_SUFFIXES] + [
    f"{p}meteorites.csv" for p in IGNORED_PREFIXES
]


@pytest.mark.parametrize("name", TEMPORARY_NAMES)
def test_temporary_and_hidden_files_are_ignored(
    tmp_path: Path, instance: dg.DagsterInstance, name: str
) -> None:
    target = land(tmp_path)
    partial = (target / "meteorites.csv").read_bytes()[:500]
    (target / "meteorites.csv").unlink()

    # a folder holding only a partial copy, however old, is not a delivery
    (target / name).write_bytes(partial)
    set_age(target, OLD)
    alone = tick(tmp_path, instance)
    assert alone.requests == [] and decode_cursor(alone.cursor) == {}

    # next to a delivery it is no part of it: not hashed, and a copy still being written
    # does not hold the delivery back
    land(tmp_path)
    (target / name).write_bytes(partial + b"still copying")
    set_age(target / name, 0)
    loaded = tick(tmp_path, instance, alone.cursor)
    [request] = loaded.requests
    assert request.tags[DELIVERY_TAG] == delivery_hash(content_hash(target, ["meteorites.csv"]))
    assert set(decode_cursor(loaded.cursor)[f"nasa/{DAY}"].files) == {"meteorites.csv"}

    # renamed to its final name once complete: now it is a new file of the delivery
    final = target / "meteorites_part2.csv"
    os.replace(target / name, final)
    set_age(final, OLD)
    [renamed] = tick(tmp_path, instance, loaded.cursor).requests
    assert renamed.partition_key == DAY
    fingerprint = content_hash(target, ["meteorites.csv", "meteorites_part2.csv"])
    assert renamed.tags[DELIVERY_TAG] == delivery_hash(fingerprint)


def test_file_within_the_quiet_period_waits_for_the_next_tick(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    target = land(tmp_path, age=0)  # just written
    early = tick(tmp_path, instance)
    assert early.requests == [] and decode_cursor(early.cursor) == {}

    set_age(target, QUIET_SECONDS + 1)
    [request] = tick(tmp_path, instance, early.cursor).requests
    assert request.partition_key == DAY


def test_correction_within_the_quiet_period_keeps_the_previous_state(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    land(tmp_path, seed=1)
    first = tick(tmp_path, instance)

    target = land(tmp_path, seed=2, age=0)  # a correction still being written
    during = tick(tmp_path, instance, first.cursor)
    assert during.requests == []
    assert decode_cursor(during.cursor) == decode_cursor(first.cursor)

    set_age(target, QUIET_SECONDS + 1)
    [request] = tick(tmp_path, instance, during.cursor).requests
    assert request.run_key != first.requests[0].run_key
    assert request.tags[DELIVERY_TAG] == delivery_hash(content_hash(target, ["meteorites.csv"]))


def test_manifest_waits_for_the_files_it_lists(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    target = land(tmp_path, rows=40, seed=1)
    second = (target / "meteorites.csv").read_bytes()
    (target / "second.csv").write_bytes(second)
    write_manifest(target, {"meteorites.csv": 40, "second.csv": 40})
    (target / "second.csv").unlink()  # the second file has not arrived yet
    set_age(target, OLD)

    waiting = tick(tmp_path, instance)
    assert waiting.requests == [] and decode_cursor(waiting.cursor) == {}

    (target / "second.csv").write_bytes(second)
    set_age(target, OLD)
    [request] = tick(tmp_path, instance, waiting.cursor).requests
    fingerprint = content_hash(target, ["manifest.json", "meteorites.csv", "second.csv"])
    assert request.tags[DELIVERY_TAG] == delivery_hash(fingerprint)


def test_manifest_grace_runs_an_incomplete_delivery_eventually(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """Past the grace period the run goes ahead; the load rejects the missing file."""
    target = land(tmp_path, rows=40)
    write_manifest(target, {"meteorites.csv": 40})
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["files"].append({"name": "never_sent.csv", "rows": 5, "sha256": "0" * 64})
    (target / "manifest.json").write_text(json.dumps(manifest))

    set_age(target, MANIFEST_GRACE_SECONDS - 60)
    within = tick(tmp_path, instance)
    assert within.requests == []

    set_age(target, MANIFEST_GRACE_SECONDS + 60)
    [request] = tick(tmp_path, instance, within.cursor).requests
    assert request.partition_key == DAY


def test_unreadable_manifest_does_not_hold_the_delivery_back(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    target = land(tmp_path)
    (target / "manifest.json").write_text("{not json")
    set_age(target, OLD)
    [request] = tick(tmp_path, instance).requests  # the load reports the manifest's problem
    assert request.partition_key == DAY


def test_folders_that_are_not_delivery_days_are_ignored(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    source = land(tmp_path) / "meteorites.csv"
    for name in ("latest", "2026-13-01", "2019-12-31", ".staging"):
        other = folder(tmp_path, name)
        other.mkdir()
        shutil.copy(source, other / "meteorites.csv")
        set_age(other, OLD)
    shutil.rmtree(source.parent)
    result = tick(tmp_path, instance)
    assert result.requests == [] and decode_cursor(result.cursor) == {}

    nasa = load_registry().agency("nasa")
    bad = scan_dataset(
        tmp_path / "landing", "meteorites", [nasa], {}, now=time.time(), quiet_seconds=2.0
    ).bad_names
    assert sorted(bad) == ["meteorites/2019-12-31", "meteorites/2026-13-01", "meteorites/latest"]


# --- several deliveries -----------------------------------------------------------------------


def test_consecutive_days_of_one_agency_are_one_run(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    days = ["2026-02-02", "2026-02-03", "2026-02-04", "2026-02-06"]
    targets = [land(tmp_path, day, seed=i) for i, day in enumerate(days)]
    first = tick(tmp_path, instance)

    by_span = {
        (r.tags.get(RANGE_START_TAG), r.tags.get(RANGE_END_TAG), r.partition_key): r
        for r in first.requests
    }
    assert set(by_span) == {("2026-02-02", "2026-02-04", None), (None, None, "2026-02-06")}
    ranged = by_span[("2026-02-02", "2026-02-04", None)]
    assert ranged.job_name == "ingest_nasa"
    assert "dagster/partition" not in ranged.tags
    prints = [content_hash(t, ["meteorites.csv"]) for t in targets]
    assert ranged.tags[DELIVERY_TAG] == delivery_hash(*prints[:3])
    assert ranged.run_key is not None
    assert ranged.run_key.startswith(
        f"nasa/meteorites/2026-02-02..2026-02-04/{delivery_hash(*prints[:3])}"
    )

    # a later correction of the middle day alone is a run of that day alone
    land(tmp_path, "2026-02-03", seed=99)
    [single] = tick(tmp_path, instance, first.cursor).requests
    assert single.partition_key == "2026-02-03"
    assert RANGE_START_TAG not in single.tags


def test_two_agencies_get_separate_runs(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    land(tmp_path, agency="nga", dataset="media_items", seed=1)
    land(tmp_path, agency="library-of-congress", dataset="media_items", seed=2)

    result = tick(tmp_path, instance, sensor="landing_media_items")

    registry = load_registry()
    got = {r.job_name: r for r in result.requests}
    assert set(got) == {"ingest_nga", "ingest_library_of_congress"}
    for agency_id, job in (
        ("nga", "ingest_nga"),
        ("library-of-congress", "ingest_library_of_congress"),
    ):
        request = got[job]
        agency = registry.agency(agency_id)
        assert request.partition_key == DAY
        assert request.tags["agency"] == agency.key
        assert request.asset_selection == list(asset_keys(agency, "media_items"))
        assert request.run_key is not None and request.run_key.startswith(
            f"{agency_id}/media_items/"
        )
    assert set(decode_cursor(result.cursor)) == {f"nga/{DAY}", f"library-of-congress/{DAY}"}


def test_more_changed_days_than_one_tick_takes_wait_for_the_next(
    tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(landing, "MAX_RUNS_PER_TICK", 1)
    land(tmp_path, "2026-02-02", seed=1)
    land(tmp_path, "2026-02-05", seed=2)  # not consecutive: a second group

    first = tick(tmp_path, instance)
    assert [r.partition_key for r in first.requests] == ["2026-02-02"]
    assert set(decode_cursor(first.cursor)) == {"nasa/2026-02-02"}
    second = tick(tmp_path, instance, first.cursor)
    assert [r.partition_key for r in second.requests] == ["2026-02-05"]
    assert tick(tmp_path, instance, second.cursor).requests == []


# --- the cursor -------------------------------------------------------------------------------


def test_cursor_round_trips(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    land(tmp_path, "2026-02-02", seed=1)
    target = land(tmp_path, "2026-02-03", seed=2)
    write_manifest(target, {"meteorites.csv": 40})
    set_age(target, OLD)
    raw = tick(tmp_path, instance).cursor

    decoded = decode_cursor(raw)
    assert set(decoded) == {"nasa/2026-02-02", "nasa/2026-02-03"}
    assert all(isinstance(s, FolderState) for s in decoded.values())
    assert set(decoded["nasa/2026-02-03"].files) == {"manifest.json", "meteorites.csv"}
    assert all(isinstance(v, tuple) for s in decoded.values() for v in s.files.values())
    assert encode_cursor(decoded) == raw
    assert decode_cursor(encode_cursor(decoded)) == decoded
    assert decode_cursor(None) == {} and decode_cursor("") == {}


@pytest.mark.parametrize(
    "cursor",
    ["{not json", json.dumps({f"nasa/{DAY}": "fingerprint-only"}), json.dumps([1, 2])],
    ids=["not-json", "wrong-shape", "not-an-object"],
)
def test_corrupt_cursor_fails_the_tick(
    tmp_path: Path, instance: dg.DagsterInstance, cursor: str
) -> None:
    """No silent fallback to an empty cursor (which would re-request every folder): the
    tick fails, visibly, until the cursor is reset."""
    land(tmp_path)
    with pytest.raises((ValueError, AttributeError)):
        tick(tmp_path, instance, cursor)
    # the same folder with a readable cursor is requested normally
    assert len(tick(tmp_path, instance, encode_cursor({})).requests) == 1


# --- the requested run, executed --------------------------------------------------------------


def _execute(request: dg.RunRequest, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def(request.job_name or "")
    return job.execute_in_process(
        partition_key=request.partition_key,
        tags=dict(request.tags),
        asset_selection=request.asset_selection,
        instance=instance,
        raise_on_error=False,
    )


def _curated_by_day(home: Path, agency: str, dataset: str) -> dict[str, int]:
    with duckdb.connect(str(agency_db(home, agency)), read_only=True) as conn:
        rows = conn.execute(
            f"SELECT CAST(_partition_date AS VARCHAR), count(*) FROM {dataset} GROUP BY 1"
        ).fetchall()
    return dict(rows)


def test_requested_run_lands_the_delivery(
    tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLUX_HOME", str(tmp_path))
    planted = deliver(tmp_path, "nasa", "meteorites", DAY, rows=120, seed=5)
    set_age(folder(tmp_path), OLD)
    [request] = tick(tmp_path, instance).requests

    result = _execute(request, instance)

    assert result.success
    assert check_results(result) == {
        "nasa/meteorites:conservation": True,
        "nasa/meteorites:contract_schema": True,
        "nasa/meteorites:anomalies": True,
    }
    assert _curated_by_day(tmp_path, "nasa", "meteorites") == {DAY: 120 - len(planted)}
    run = instance.get_run_by_id(result.run_id)
    assert run is not None and run.tags[DELIVERY_TAG] == request.tags[DELIVERY_TAG]
    # the other nasa dataset in the job was not selected
    assert not (tmp_path / "landing" / "nasa" / "contract_transactions").exists()
    materialized = {
        (e.asset_key.to_user_string(), e.partition)
        for e in result.get_asset_materialization_events()
        if e.asset_key is not None
    }
    assert materialized == {
        ("nasa/raw_meteorites", DAY),
        ("nasa/meteorites", DAY),
        ("nasa/meteorites_quarantine", DAY),
    }


def test_requested_range_run_lands_every_day(
    tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLUX_HOME", str(tmp_path))
    days = ["2026-02-02", "2026-02-03", "2026-02-04"]
    expected = {}
    for i, day in enumerate(days):
        planted = deliver(tmp_path, "nasa", "meteorites", day, rows=60 + i, seed=30 + i)
        set_age(folder(tmp_path, day), OLD)
        expected[day] = 60 + i - len(planted)
    [request] = tick(tmp_path, instance).requests
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == (days[0], days[-1])

    result = _execute(request, instance)

    assert result.success
    assert _curated_by_day(tmp_path, "nasa", "meteorites") == expected
    steps = [e for e in result.all_events if e.event_type_value == "STEP_SUCCESS"]
    assert len(steps) == 1  # one run, one step, the whole range


# --- delivery receipts: content loaded by something else is not loaded again ------------------


def receipt_for(home: Path, contents: dict[str, str], day: str = DAY, **fields: str) -> Path:
    """A receipt written where the ingest step writes it, for this content of the day."""
    path = FluxWarehouse(home=str(home)).receipt_path("nasa", "meteorites", day)
    write_receipt(
        path,
        agency="nasa",
        dataset="meteorites",
        day=day,
        contents=contents,
        status=fields.get("status", "loaded"),
        run_id=fields.get("run_id", "run-from-elsewhere"),
    )
    return path


def test_receipt_round_trips_and_is_the_sensors_fingerprint(tmp_path: Path) -> None:
    target = land(tmp_path, rows=40)
    write_manifest(target, {"meteorites.csv": 40})
    (target / ".meteorites.csv.part").write_bytes(b"not a file of the delivery")
    set_age(target, OLD)
    csv_sha = hashlib.sha256((target / "meteorites.csv").read_bytes()).hexdigest()

    # the load knows the data file's hash; the manifest's is computed from the folder, and a
    # file the load reported but that is not in the folder (never arrived) is left out
    contents = delivery_contents(target, {"meteorites.csv": csv_sha, "never_sent.csv": None})
    assert set(contents) == {"manifest.json", "meteorites.csv"}
    path = receipt_for(tmp_path, contents, status="rejected", run_id="abc")

    assert path == agency_receipts(tmp_path, "nasa") / "meteorites" / f"{DAY}.json"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # nothing left aside
    got = read_receipt(path)
    assert got is not None
    assert got.fingerprint == content_hash(target, ["manifest.json", "meteorites.csv"])
    assert (got.agency, got.dataset, got.day, got.status, got.run_id) == (
        "nasa",
        "meteorites",
        DAY,
        "rejected",
        "abc",
    )
    assert got.files == contents and got.written_at.tzinfo is not None
    # the sensor's own state of the folder has the same fingerprint
    state = decode_cursor(tick(tmp_path, dg.DagsterInstance.ephemeral()).cursor)[f"nasa/{DAY}"]
    assert state.fingerprint == got.fingerprint
    # an unreadable receipt is no receipt (the sensor then loads the day again)
    path.write_text("{half a receipt")
    assert read_receipt(path) is None
    assert read_receipt(path.with_name("2026-02-03.json")) is None
    with pytest.raises(ValueError, match="status"):
        receipt_for(tmp_path, contents, status="maybe")


def test_folder_with_a_receipt_of_the_same_content_is_not_run(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """What `flux dev` sees after `flux demo`: an empty cursor, every folder loaded already."""
    target = land(tmp_path, seed=1)
    receipt_for(tmp_path, delivery_contents(target))

    first = tick(tmp_path, instance)

    assert first.requests == []
    assert first.skip == (
        "no new or changed meteorites delivery (1 already loaded, per their receipts)"
    )
    # the cursor knows the folder now: the next tick does not even read the receipt
    assert decode_cursor(first.cursor)[f"nasa/{DAY}"].fingerprint == content_hash(
        target, ["meteorites.csv"]
    )
    receipt_for(tmp_path, {"meteorites.csv": "0" * 64})  # the receipt no longer matches
    assert tick(tmp_path, instance, first.cursor).requests == []

    # a correction of the same folder is a new delivery: run
    land(tmp_path, seed=2)
    [corrected] = tick(tmp_path, instance, first.cursor).requests
    assert corrected.partition_key == DAY
    assert corrected.tags[DELIVERY_TAG] == delivery_hash(content_hash(target, ["meteorites.csv"]))


def test_receipt_of_other_content_does_not_stop_the_run(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    target = land(tmp_path, seed=1)
    loaded_before = delivery_contents(target)
    land(tmp_path, seed=2)  # replaced after that load, before the sensor saw it

    receipt_for(tmp_path, loaded_before)
    [request] = tick(tmp_path, instance).requests

    assert request.tags[DELIVERY_TAG] == delivery_hash(content_hash(target, ["meteorites.csv"]))


def test_receipt_only_counts_when_written_after_the_files_last_changed(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """A, B, then A again, with receipts: A's run wrote its receipt, B's run has not run yet
    when A comes back. A's receipt must not stop the third run (B would be left loaded)."""
    target = land(tmp_path, seed=1)
    version_a = (target / "meteorites.csv").read_bytes()
    ticks = [tick(tmp_path, instance)]
    receipt_for(tmp_path, delivery_contents(target), run_id="run-of-a")  # A's run finished
    land(tmp_path, seed=2, age=OLD - 10)
    ticks.append(tick(tmp_path, instance, ticks[-1].cursor))  # B requested, not run yet
    (target / "meteorites.csv").write_bytes(version_a)
    set_age(target, OLD - 20)
    ticks.append(tick(tmp_path, instance, ticks[-1].cursor))

    keys = [t.requests[0].run_key for t in ticks if len(t.requests) == 1]
    assert len(set(keys)) == 3, "every change of content requests a run"
    assert ticks[2].requests[0].tags[DELIVERY_TAG] == ticks[0].requests[0].tags[DELIVERY_TAG]

    # a fresh cursor: the receipt decides by the files' ctime, which no copy keeps (an mtime
    # kept by `cp -p` or rsync does not make a re-delivery look loaded)
    receipt_for(tmp_path, delivery_contents(target), run_id="run-of-a-again")
    assert tick(tmp_path, instance).requests == []  # receipt newer than the files
    shutil.copy2(target / "meteorites.csv", tmp_path / "copy.csv")
    os.replace(tmp_path / "copy.csv", target / "meteorites.csv")  # same bytes, same mtime
    assert len(tick(tmp_path, instance).requests) == 1


def test_executed_run_leaves_a_receipt_so_a_fresh_cursor_skips_it(
    tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ingest step writes the receipt (any load: the sensor's, the demo's, `flux load`)."""
    monkeypatch.setenv("FLUX_HOME", str(tmp_path))
    target = land(tmp_path, "2026-02-02", seed=1)
    land(tmp_path, "2026-02-03", seed=2)
    (target / "unreadable.csv").write_bytes(b"id,name\n\xff\xfe,x\n")  # rejected whole
    set_age(target, OLD)
    first = tick(tmp_path, instance)
    [request] = first.requests

    result = _execute(request, instance)

    assert not result.success  # the rejected file fails the run, after both days loaded
    warehouse = FluxWarehouse(home=str(tmp_path))
    for day, status in (("2026-02-02", "rejected"), ("2026-02-03", "loaded")):
        receipt = read_receipt(warehouse.receipt_path("nasa", "meteorites", day))
        assert receipt is not None, f"no receipt for {day}"
        assert (receipt.status, receipt.run_id) == (status, result.run_id)
        assert receipt.fingerprint == decode_cursor(first.cursor)[f"nasa/{day}"].fingerprint
    # `flux dev` on this home later: a new cursor, nothing to run
    again = tick(tmp_path, instance)
    assert again.requests == []
    assert set(decode_cursor(again.cursor)) == {"nasa/2026-02-02", "nasa/2026-02-03"}
