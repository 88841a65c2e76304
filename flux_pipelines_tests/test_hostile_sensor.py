"""The landing sensors under attack: real sensor evaluations (``test_landing_sensor.tick``)
over a real landing zone holding links, FIFOs, sparse files, misplaced folders and a writer
that stalls; every finding must reach the tick and ``<home>/landing_findings.json``, and one
agency's mess must never cost another agency its run.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.defs.ingest.landing import (
    FINDINGS_FILE,
    HIDDEN_GRACE_SECONDS,
    MANIFEST_GRACE_SECONDS,
    QUIET_ENV,
    REQUIRE_MARKER_ENV,
    decode_cursor,
    landing_policy,
    landing_sensor_name,
    scan_dataset,
    zone_steward,
)
from flux_pipelines.errors import ConfigurationError
from flux_pipelines.ingest import receipts
from flux_pipelines.ingest.manifest import COMPLETION_MARKER
from flux_pipelines_tests.conftest import deliver
from flux_pipelines_tests.test_landing_sensor import (
    DAY,
    OLD,
    _curated_by_day,
    _execute,
    folder,
    land,
    set_age,
    tick,
)

MEDIA = landing_sensor_name("media_items")


@pytest.fixture
def instance() -> dg.DagsterInstance:
    return dg.DagsterInstance.ephemeral()


def findings(home: Path) -> dict[str, str]:
    """path -> rule of every entry the sensors reported as not loaded."""
    doc = json.loads((home / FINDINGS_FILE).read_text())
    return {f["path"]: f["rule"] for f in doc["unloadable"]}


def age(path: Path, seconds: float) -> None:
    """Make one entry (not its content) look last changed ``seconds`` ago."""
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp), follow_symlinks=False)


# --- 2. isolation: one agency's mess never stops the tick for the others -------------------


def _hostile(home: Path, kind: str) -> str:
    """Plant one hostile thing in nga's media_items landing folder; the path reported."""
    nga = home / "landing" / "nga" / "media_items"
    day = nga / DAY
    if kind == "fifo_in_day":
        land(home, agency="nga", dataset="media_items")
        os.mkfifo(day / "pipe.csv")
        age(day / "pipe.csv", OLD)
        return f"nga/media_items/{DAY}/pipe.csv"
    if kind == "dangling_day_link":
        nga.mkdir(parents=True)
        day.symlink_to(home / "nowhere")
        return f"nga/media_items/{DAY}"
    if kind == "day_linked_to_other_agency":
        nga.mkdir(parents=True)
        day.symlink_to(folder(home, agency="library-of-congress", dataset="media_items"))
        return f"nga/media_items/{DAY}"
    if kind == "dataset_folder_is_a_fifo":
        nga.parent.mkdir(parents=True)
        os.mkfifo(nga)
        return "nga/media_items"
    if kind == "dataset_folder_is_a_link":
        nga.parent.mkdir(parents=True)
        nga.symlink_to(home / "landing" / "library-of-congress" / "media_items")
        return "nga/media_items"
    if kind == "file_where_a_day_belongs":
        nga.mkdir(parents=True)
        (nga / DAY).write_text("id\n1\n")
        return f"nga/media_items/{DAY}"
    if kind == "folder_named_like_a_file":
        land(home, agency="nga", dataset="media_items")
        (day / "more.csv").mkdir()
        age(day / "more.csv", OLD)
        return f"nga/media_items/{DAY}/more.csv"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "rule"),
    [
        ("fifo_in_day", "delivery.not_a_file"),
        ("dangling_day_link", "delivery.symlink"),
        ("day_linked_to_other_agency", "delivery.symlink"),
        ("dataset_folder_is_a_fifo", "delivery.not_a_folder"),
        ("dataset_folder_is_a_link", "delivery.symlink"),
        ("file_where_a_day_belongs", "delivery.not_a_folder"),
        ("folder_named_like_a_file", "delivery.not_a_file"),
    ],
)
def test_hostile_entries_of_one_agency_never_stop_the_others(
    tmp_path: Path, instance: dg.DagsterInstance, kind: str, rule: str
) -> None:
    land(tmp_path, agency="library-of-congress", dataset="media_items", seed=2)
    where = _hostile(tmp_path, kind)

    started = time.monotonic()
    result = tick(tmp_path, instance, sensor=MEDIA)

    assert time.monotonic() - started < 20  # a FIFO is never opened: no hang
    jobs = {r.job_name for r in result.requests}
    assert "ingest_library_of_congress" in jobs
    # a real day folder holding a hostile entry is still a delivery: its load rejects the
    # entry by name (test_hostile_landing); a day folder that is not real never runs
    assert ("ingest_nga" in jobs) == (kind in {"fifo_in_day", "folder_named_like_a_file"})
    assert findings(tmp_path)[where] == rule
    cursor = decode_cursor(result.cursor)
    assert f"library-of-congress/{DAY}" in cursor


def test_file_name_that_is_not_utf8_does_not_fail_the_tick(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """A name is bytes: one that is not UTF-8 must cost its agency a rejection at load
    (test_hostile_landing), never the tick for everyone; hidden ones are reported as text."""
    land(tmp_path, agency="library-of-congress", dataset="media_items", seed=2)
    day = land(tmp_path, agency="nga", dataset="media_items", seed=3)
    raw = os.fsencode(day)
    for name in (b"bad\xff.csv", b".bad\xfe.csv"):
        fd = os.open(raw + b"/" + name, os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, b"id\n1\n")
        os.close(fd)
        stamp = time.time() - HIDDEN_GRACE_SECONDS - 60
        os.utime(raw + b"/" + name, (stamp, stamp))

    result = tick(tmp_path, instance, sensor=MEDIA)

    assert {r.job_name for r in result.requests} == {"ingest_library_of_congress", "ingest_nga"}
    assert findings(tmp_path)[f"nga/media_items/{DAY}/.bad\\xfe.csv"] == "delivery.hidden_name"


def test_huge_sparse_file_costs_the_tick_nothing(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """Before: the tick hashed every file, so a 50 GB sparse file outlasted the sensor's time
    limit and no delivery of the dataset was picked up. The tick now reads no file above
    HASH_MAX_BYTES: such a file counts by size, mtime and inode."""
    land(tmp_path, agency="library-of-congress", dataset="media_items", seed=2)
    day = folder(tmp_path, agency="nga", dataset="media_items")
    day.mkdir(parents=True)
    with (day / "huge.csv").open("wb") as handle:
        handle.truncate(50 << 30)
    set_age(day, OLD)

    started = time.monotonic()
    result = tick(tmp_path, instance, sensor=MEDIA)

    assert time.monotonic() - started < 10
    assert {r.job_name for r in result.requests} == {"ingest_library_of_congress", "ingest_nga"}
    state = decode_cursor(result.cursor)[f"nga/{DAY}"]
    assert state.files["huge.csv"][1].startswith("stat:")


def test_hashing_per_tick_is_capped_and_agencies_take_turns(tmp_path: Path) -> None:
    """A backlog of folders is hashed over several ticks, one agency's folder per agency in
    turn, so one agency's flood cannot starve the others; nothing is lost on the way."""
    registry = load_registry()
    agencies = [registry.agency("nga"), registry.agency("library-of-congress")]
    for i, d in enumerate(["2026-02-02", "2026-02-03", "2026-02-04"]):
        land(tmp_path, d, agency="nga", dataset="media_items", seed=i)
    land(tmp_path, "2026-02-02", agency="library-of-congress", dataset="media_items", seed=9)
    size = (folder(tmp_path, agency="nga", dataset="media_items") / "media_items.csv").stat()
    cursor: dict = {}
    seen: list[list[str]] = []
    now = time.time()
    for i in range(4):  # ticks 15 s apart, as the daemon runs them
        scan = scan_dataset(
            tmp_path / "landing", "media_items", agencies, cursor,
            now=now + 15 * i, quiet_seconds=2.0, hash_budget=size.st_size + 1,
        )  # fmt: skip
        seen.append(sorted(f"{d.agency.id}/{d.day}" for d in scan.changed))
        assert len(scan.changed) == 1 and len(scan.deferred) == 3 - i
        cursor = scan.cursor
    # the other agency is served by the second tick, not after nga's whole backlog
    assert "library-of-congress/2026-02-02" in seen[0] + seen[1]
    assert sorted(d for tick_seen in seen for d in tick_seen) == [
        "library-of-congress/2026-02-02",
        "nga/2026-02-02",
        "nga/2026-02-03",
        "nga/2026-02-04",
    ]


# --- 3. nothing unreported ------------------------------------------------------------------


def test_everything_flux_will_not_load_is_reported(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """Before: files under a misnamed agency or dataset folder, in a sub-folder, a folder
    named like a file, names starting with '.', '_' or '..' were never loaded and never
    reported. Now each is named, with its reason, in the tick and in landing_findings.json."""
    landing = tmp_path / "landing"
    source = land(tmp_path, agency="nga", dataset="media_items") / "media_items.csv"
    planted = {
        "unknown-agency": "delivery.unknown_folder",
        "nga/media-items": "delivery.unknown_folder",  # a misspelt dataset
        "nga/meteorites": "delivery.unknown_folder",  # nga does not deliver meteorites
        "nga/media_items/latest": "delivery.unknown_folder",
        "nga/media_items/stray.csv": "delivery.not_a_folder",
        f"nga/media_items/{DAY}/sub": "delivery.not_a_file",
        f"nga/media_items/{DAY}/media.csv": "delivery.not_a_file",
        f"nga/media_items/{DAY}/.hidden.csv": "delivery.hidden_name",
        f"nga/media_items/{DAY}/_underscore.csv": "delivery.hidden_name",
        f"nga/media_items/{DAY}/..dots.csv": "delivery.hidden_name",
        f"nga/media_items/{DAY}/upload.csv.part": "delivery.hidden_name",
    }
    for path in planted:
        target = landing / path
        if path.endswith((".csv", ".part")) and "/sub" not in path and "media.csv" not in path:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
        else:
            target.mkdir(parents=True, exist_ok=True)
            (target / "2026-02-02.csv").write_bytes(source.read_bytes())
        age(target, HIDDEN_GRACE_SECONDS + 60)
    (landing / "nga" / "meteorites" / DAY).mkdir()

    steward = tick(tmp_path, instance, sensor=landing_sensor_name(zone_steward(load_registry())))
    media = tick(tmp_path, instance, sensor=MEDIA)
    meteorites = tick(tmp_path, instance, sensor="landing_meteorites")

    reported = findings(tmp_path)
    assert {p: reported.get(p) for p in planted} == planted
    doc = json.loads((tmp_path / FINDINGS_FILE).read_text())
    assert all(f["reason"] and f["first_seen"] for f in doc["unloadable"])
    assert steward.skip and "not loaded: " in steward.skip and "unknown-agency" in steward.skip
    assert meteorites.skip and "nga/meteorites [delivery.unknown_folder]" in meteorites.skip
    [request] = media.requests  # nga's day still loads: its sub-folders are rejected by name
    assert request.job_name == "ingest_nga"
    # the agency sees its own findings beside its reports (and no other agency's)
    shared = json.loads((tmp_path / "outbox" / "nga" / FINDINGS_FILE).read_text())
    assert {f["path"] for f in shared["unloadable"]} == {p for p in planted if p.startswith("nga/")}
    assert not (tmp_path / "outbox" / "unknown-agency").exists()

    # the record follows the landing zone: cleaned up, the findings go (first_seen kept while
    # an entry stays)
    first = {f["path"]: f["first_seen"] for f in doc["unloadable"]}
    (landing / "unknown-agency" / "2026-02-02.csv").unlink()
    (landing / "unknown-agency").rmdir()
    tick(tmp_path, instance, sensor=landing_sensor_name(zone_steward(load_registry())))
    later = json.loads((tmp_path / FINDINGS_FILE).read_text())
    assert "unknown-agency" not in findings(tmp_path)
    assert {f["path"]: f["first_seen"] for f in later["unloadable"]}["nga/media-items"] == first[
        "nga/media-items"
    ]
    # once an agency's folders are clean, its shared copy goes too
    for path in [p for p in planted if p.startswith("nga/")]:
        target = landing / path
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    for sensor in (MEDIA, "landing_meteorites"):
        tick(tmp_path, instance, sensor=sensor)
    tick(tmp_path, instance, sensor=landing_sensor_name(zone_steward(load_registry())))
    assert not [p for p in findings(tmp_path) if p.startswith("nga/")]
    assert not (tmp_path / "outbox" / "nga" / FINDINGS_FILE).exists()


def test_hidden_names_are_reported_only_past_the_grace_period(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    target = land(tmp_path, agency="nga", dataset="media_items")
    (target / "copying.csv.part").write_text("id\n")  # an upload in progress: not a finding
    tick(tmp_path, instance, sensor=MEDIA)
    assert f"nga/media_items/{DAY}/copying.csv.part" not in findings(tmp_path)
    age(target / "copying.csv.part", HIDDEN_GRACE_SECONDS + 1)
    tick(tmp_path, instance, sensor=MEDIA)
    assert findings(tmp_path)[f"nga/media_items/{DAY}/copying.csv.part"] == "delivery.hidden_name"


# --- 4. complete deliveries only ------------------------------------------------------------


def _slow_writer(target: Path, lines: list[bytes], pause: float, marker: bool) -> threading.Thread:
    """An agency's upload that stalls: 6 rows, a pause longer than the quiet period, the
    rest, then (when ``marker``) the _SUCCESS file."""

    def write() -> None:
        with target.open("wb") as handle:
            handle.writelines(lines[:7])  # header + 6 rows
            handle.flush()
            time.sleep(pause)
            handle.writelines(lines[7:])
            handle.flush()
        time.sleep(pause)
        if marker:
            (target.parent / COMPLETION_MARKER).write_bytes(b"")

    return threading.Thread(target=write, daemon=True)


def test_stalled_upload_is_not_published_when_the_agency_must_signal_completion(
    tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a writer pausing longer than the 2 s quiet period got 6 of its 10 rows
    published. An agency required to signal completion is loaded only after _SUCCESS: every
    tick during the stall finds nothing to run, the run after the marker loads all 10."""
    monkeypatch.setenv("FLUX_HOME", str(tmp_path))
    monkeypatch.setenv(QUIET_ENV, "0.3")
    monkeypatch.setenv(REQUIRE_MARKER_ENV, "nga")
    scratch = tmp_path / "scratch"
    planted = deliver(scratch, "nga", "media_items", DAY, rows=10, seed=21)
    lines = (folder(scratch, agency="nga", dataset="media_items") / "media_items.csv").read_bytes()
    target = folder(tmp_path, agency="nga", dataset="media_items") / "media_items.csv"
    target.parent.mkdir(parents=True)
    writer = _slow_writer(target, lines.splitlines(keepends=True), pause=1.0, marker=True)

    writer.start()
    cursor, ticks = None, 0
    while writer.is_alive():
        result = tick(tmp_path, instance, cursor, sensor=MEDIA)
        assert result.requests == [], "a run was requested before _SUCCESS"
        cursor, ticks = result.cursor, ticks + 1
        time.sleep(0.1)
    assert ticks >= 2  # the stall was watched, tick after tick (fewer on a loaded machine)
    [request] = tick(tmp_path, instance, cursor, sensor=MEDIA).requests

    assert _execute(request, instance).success
    assert _curated_by_day(tmp_path, "nga", "media_items") == {DAY: 10 - len(planted)}


def test_without_a_signal_a_stall_longer_than_the_quiet_period_is_indistinguishable(
    tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why the rule exists: with neither marker nor manifest, a tick during the stall sees a
    quiet file. The run it requests must then not load a part: if the writer resumes while
    the file is read, the file is rejected (test_hostile_landing); this pins the sensor side."""
    monkeypatch.setenv(QUIET_ENV, "0.3")
    scratch = tmp_path / "scratch"
    deliver(scratch, "nga", "media_items", DAY, rows=10, seed=22)
    lines = (folder(scratch, agency="nga", dataset="media_items") / "media_items.csv").read_bytes()
    target = folder(tmp_path, agency="nga", dataset="media_items") / "media_items.csv"
    target.parent.mkdir(parents=True)
    writer = _slow_writer(target, lines.splitlines(keepends=True), pause=1.5, marker=False)
    writer.start()
    time.sleep(0.8)  # inside the stall, past the quiet period
    during = tick(tmp_path, instance, sensor=MEDIA)
    writer.join()
    assert len(during.requests) == 1  # the documented limit of a quiet period


def test_marker_makes_a_delivery_ready_at_once_and_a_later_change_waits(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    target = land(tmp_path, agency="nga", dataset="media_items", age=0)  # just written
    assert tick(tmp_path, instance, sensor=MEDIA).requests == []  # quiet period
    (target / COMPLETION_MARKER).write_bytes(b"")
    [request] = tick(tmp_path, instance, sensor=MEDIA).requests  # complete: no waiting
    assert request.partition_key == DAY

    marker = target / COMPLETION_MARKER
    age(marker, OLD)
    set_age(target / "media_items.csv", 10)  # changed after the marker
    assert tick(tmp_path, instance, sensor=MEDIA).requests == []
    age(marker, MANIFEST_GRACE_SECONDS + 120)
    set_age(target / "media_items.csv", MANIFEST_GRACE_SECONDS + 60)
    tick(tmp_path, instance, sensor=MEDIA)
    assert findings(tmp_path)[f"nga/media_items/{DAY}"] == "delivery.incomplete"


def test_required_marker_missing_past_the_grace_period_is_reported(
    tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(REQUIRE_MARKER_ENV, "*")
    land(tmp_path, agency="nga", dataset="media_items", age=MANIFEST_GRACE_SECONDS + 60)
    result = tick(tmp_path, instance, sensor=MEDIA)
    assert result.requests == []
    assert findings(tmp_path)[f"nga/media_items/{DAY}"] == "delivery.incomplete"


def test_policy_comes_from_the_environment_and_bad_values_fail_loudly() -> None:
    policy = landing_policy({QUIET_ENV: "90", REQUIRE_MARKER_ENV: "nga, nasa"})
    assert policy.quiet_seconds == 90.0
    assert policy.requires_marker("nga") and not policy.requires_marker("dod")
    assert landing_policy({REQUIRE_MARKER_ENV: "*"}).requires_marker("dod")
    with pytest.raises(ConfigurationError, match=QUIET_ENV):
        landing_policy({QUIET_ENV: "soon"})


# --- receipts for files the tick never reads ------------------------------------------------


def test_big_files_loaded_elsewhere_are_matched_by_stat_without_hashing(
    tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file above HASH_MAX_BYTES is never hashed on a tick; the load's receipt records its
    stat as read, so a fresh cursor (``flux dev`` after ``flux demo``) still skips it."""
    monkeypatch.setenv("FLUX_HOME", str(tmp_path))
    monkeypatch.setattr(receipts, "HASH_MAX_BYTES", 100)  # every delivered file is "big"
    land(tmp_path, agency="nga", dataset="media_items")
    first = tick(tmp_path, instance, sensor=MEDIA)
    [request] = first.requests
    assert decode_cursor(first.cursor)[f"nga/{DAY}"].files["media_items.csv"][1].startswith("stat:")

    _execute(request, instance)
    again = tick(tmp_path, instance, sensor=MEDIA)  # a fresh cursor

    assert again.requests == []
    assert again.skip and "1 already loaded, per their receipts" in again.skip
