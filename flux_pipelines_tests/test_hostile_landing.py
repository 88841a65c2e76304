"""The landing zone under attack, loaded for real: symbolic links to another agency's data or
to /etc/passwd, file names that are patterns, FIFOs and sub-folders, files that grow while
they are read, a sparse 50 GB file, and an outbox folder that is a link.

Every load goes through Dagster (``conftest.materialize``: the ingest step, the reports, the
receipts) or the real loader; links, FIFOs and sparse files are real. Tests run as root, so
"unreadable" is made of things root cannot read either: a FIFO (no writer), a dangling link,
a folder where a file belongs, a file that disappears.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

import flux_pipelines.ingest.delivery as delivery_module
from flux_pipelines.cli.verdict import print_verdict
from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.errors import UnsafePath
from flux_pipelines.ingest.confine import (
    LANDING,
    LANDING_RULES,
    open_dir_under,
    open_file_under,
)
from flux_pipelines.ingest.delivery import (
    PartitionLoader,
    delivered_files,
    delivery_manifest,
    load_partition,
)
from flux_pipelines.ingest.manifest import COMPLETION_MARKER, ManifestInvalid, write_manifest
from flux_pipelines.ingest.readers import inspect_file, read_chunks
from flux_pipelines.ingest.scanning import FileProblem
from flux_pipelines.names import agencies_with_db, agency_db
from flux_pipelines.reports import write_delivery_report
from flux_pipelines.reports.verdict import validate_file
from flux_pipelines_tests.conftest import deliver, materialize

DAY = "2026-02-02"
PASSWD_FIRST_LINE = Path("/etc/passwd").read_text().splitlines()[0]


# --- helpers ------------------------------------------------------------------------------------


def day_folder(home: Path, agency: str, dataset: str, day: str = DAY) -> Path:
    return home / LANDING / agency / dataset / day


def deliveries(home: Path, agency: str) -> dict[str, dict[str, Any]]:
    """The agency's deliveries log: file -> status, rule, reason, rows read."""
    with duckdb.connect(str(agency_db(home, agency)), read_only=True) as conn:
        rows = conn.execute(
            "SELECT file, status, rule_id, reason, rows_read FROM _flux_deliveries"
        ).fetchall()
    return {
        r[0]: {"status": r[1], "rule": r[2], "reason": r[3] or "", "rows_read": r[4]} for r in rows
    }


def raw_files(home: Path, agency: str, dataset: str, day: str = DAY) -> set[str]:
    """Delivered files with rows in the agency's raw zone for the day."""
    folder = home / "warehouse" / agency / "raw" / dataset / f"_partition_date={day}"
    parts = sorted(folder.glob("*.parquet"))
    if not parts:
        return set()
    return set(pl.read_parquet(parts, columns=["_file"]).get_column("_file").unique())


def published_rows(home: Path, agency: str, dataset: str, day: str = DAY) -> pl.DataFrame:
    return pl.read_parquet(home / "published" / agency / dataset / f"{day}.parquet")


def everything_written(home: Path) -> str:
    """Every text Flux wrote for agencies and operators: outbox reports, deliveries logs."""
    texts = [p.read_text(errors="replace") for p in (home / "outbox").rglob("*") if p.is_file()]
    for db in (agency_db(home, a) for a in agencies_with_db(home)):
        with duckdb.connect(str(db), read_only=True) as conn:
            texts += [str(r) for r in conn.execute("SELECT * FROM _flux_deliveries").fetchall()]
    return "\n".join(texts)


def land_media(home: Path, agency: str, rows: int, seed: int) -> tuple[Path, int]:
    """A real media_items delivery; (its file, rows that pass every fatal rule)."""
    planted = deliver(home, agency, "media_items", DAY, rows=rows, seed=seed)
    return day_folder(home, agency, "media_items") / "media_items.csv", rows - len(planted)


# --- 1. confinement: links are never followed -----------------------------------------------


def test_link_to_another_agencys_published_copy_is_rejected_and_never_read(
    tmp_path: Path,
) -> None:
    """Before: nga's landing folder held a link to library-of-congress's published Parquet
    and those rows were curated and published as nga's."""
    land_media(tmp_path, "library-of-congress", rows=50, seed=7)
    assert materialize(tmp_path, [("library-of-congress", "media_items")], DAY).success
    theirs = tmp_path / "published" / "library-of-congress" / "media_items" / f"{DAY}.parquet"
    assert theirs.is_file()
    _, own_good = land_media(tmp_path, "nga", rows=30, seed=8)
    (day_folder(tmp_path, "nga", "media_items") / "theirs.parquet").symlink_to(theirs)

    result = materialize(tmp_path, [("nga", "media_items")], DAY)

    assert not result.success  # the link is a file rejected whole: the partition fails
    log = deliveries(tmp_path, "nga")
    assert log["theirs.parquet"]["status"] == "rejected"
    assert log["theirs.parquet"]["rule"] == "delivery.symlink"
    assert "symbolic link" in log["theirs.parquet"]["reason"]
    assert log["media_items.csv"]["status"] == "loaded"
    assert raw_files(tmp_path, "nga", "media_items") == {"media_items.csv"}
    published = published_rows(tmp_path, "nga", "media_items")
    assert set(published.get_column("_file")) == {"media_items.csv"}
    assert published.height == own_good


def test_day_folder_linked_to_another_agencys_landing_folder_loads_nothing(
    tmp_path: Path,
) -> None:
    land_media(tmp_path, "library-of-congress", rows=40, seed=9)
    nga = day_folder(tmp_path, "nga", "media_items")
    nga.parent.mkdir(parents=True)
    nga.symlink_to(day_folder(tmp_path, "library-of-congress", "media_items"))

    assert delivered_files(nga) == [nga]  # listed alone, so the load names it
    assert delivery_manifest(nga) is None
    result = materialize(tmp_path, [("nga", "media_items")], DAY)

    assert not result.success
    log = deliveries(tmp_path, "nga")
    assert set(log) == {DAY}
    assert log[DAY]["rule"] == "delivery.symlink"
    assert f"media_items/{DAY} is a symbolic link" in log[DAY]["reason"]
    assert raw_files(tmp_path, "nga", "media_items") == set()
    assert not (tmp_path / "published" / "nga" / "media_items" / f"{DAY}.parquet").exists()


def test_link_to_etc_passwd_never_shows_its_content(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: the first line of /etc/passwd appeared in the deliveries log, summary.html
    and `flux validate` output."""
    land_media(tmp_path, "nga", rows=20, seed=3)
    folder = day_folder(tmp_path, "nga", "media_items")
    link = folder / "passwd.csv"
    link.symlink_to("/etc/passwd")

    assert not materialize(tmp_path, [("nga", "media_items")], DAY).success

    log = deliveries(tmp_path, "nga")
    assert (log["passwd.csv"]["rule"], log["passwd.csv"]["rows_read"]) == ("delivery.symlink", 0)
    assert raw_files(tmp_path, "nga", "media_items") == {"media_items.csv"}
    summary = tmp_path / "outbox" / "nga" / "media_items" / DAY / "summary.html"
    assert "passwd.csv" in summary.read_text()  # the agency is told, by name
    assert PASSWD_FIRST_LINE not in everything_written(tmp_path)
    assert "root:" not in everything_written(tmp_path)

    verdict = validate_file(link, dataset="media_items", day=dt.date(2026, 2, 2), agency="nga")
    print_verdict(verdict, show=20)
    shown = capsys.readouterr().out
    assert verdict.exit_code == 2
    assert "delivery.symlink" in shown and "root:" not in shown


def test_link_to_a_csv_elsewhere_on_the_host_lands_no_row_anywhere(tmp_path: Path) -> None:
    """Before: a link to any CSV on the host put its rows in the raw zone, even rejected."""
    source, _ = land_media(tmp_path, "nga", rows=20, seed=4)
    outside = tmp_path / "elsewhere" / "secret.csv"
    outside.parent.mkdir()
    shutil.copy(source, outside)  # valid media rows: would load if followed
    (source.parent / "secret.csv").symlink_to(outside)
    (source.parent / "dangling.csv").symlink_to(tmp_path / "nowhere.csv")

    assert not materialize(tmp_path, [("nga", "media_items")], DAY).success

    log = deliveries(tmp_path, "nga")
    assert {f: v["rule"] for f, v in log.items() if v["status"] == "rejected"} == {
        "secret.csv": "delivery.symlink",
        "dangling.csv": "delivery.symlink",
    }
    assert raw_files(tmp_path, "nga", "media_items") == {"media_items.csv"}


def test_manifest_that_is_a_link_is_invalid_and_not_read(tmp_path: Path) -> None:
    land_media(tmp_path, "nga", rows=20, seed=5)
    folder = day_folder(tmp_path, "nga", "media_items")
    (folder / "manifest.json").symlink_to("/etc/passwd")

    manifest = delivery_manifest(folder)

    assert isinstance(manifest, ManifestInvalid)
    assert "symbolic link" in str(manifest) and "root:" not in str(manifest)


def test_confinement_refuses_dot_dot_and_links_on_the_way(tmp_path: Path) -> None:
    root = tmp_path / LANDING
    (root / "nga" / "media_items" / DAY).mkdir(parents=True)
    (root / "nasa").mkdir()
    (root / "nasa" / "secret.csv").write_text("a\n1\n")
    (root / "nga" / "media_items" / "2026-02-03").symlink_to(root / "nasa")

    with pytest.raises(UnsafePath) as climbed:
        open_file_under(root, root / "nga" / ".." / "nasa" / "secret.csv", zone=LANDING)
    assert climbed.value.rule_id == "delivery.outside_landing"
    with pytest.raises(UnsafePath) as linked:
        open_file_under(
            root, root / "nga" / "media_items" / "2026-02-03" / "secret.csv", zone=LANDING
        )
    assert linked.value.rule_id == "delivery.symlink"
    assert "nga/media_items/2026-02-03 is a symbolic link" in linked.value.reason
    with pytest.raises(UnsafePath) as outside:
        open_dir_under(root, tmp_path / "other", zone=LANDING)
    assert outside.value.rule_id == "delivery.outside_landing"
    # every new rule has the words an agency's report shows
    assert {"delivery.symlink", "delivery.outside_landing", "delivery.not_a_file"} <= set(
        LANDING_RULES
    )


# --- 1. file names are data, never patterns -------------------------------------------------


def test_file_names_with_pattern_characters_are_read_as_names(tmp_path: Path) -> None:
    """Before: `*.csv` was read as a glob (its rows plus every other CSV) and
    `meteorites[1].csv` was rejected as 'no paths specified for this reader'."""
    folder = day_folder(tmp_path, "nasa", "meteorites")
    deliver(tmp_path, "nasa", "meteorites", DAY, rows=30, seed=1)
    os.replace(folder / "meteorites.csv", folder / "*.csv")
    deliver(tmp_path, "nasa", "meteorites", DAY, rows=20, seed=2)
    os.replace(folder / "meteorites.csv", folder / "meteorites[1].csv")
    deliver(tmp_path, "nasa", "meteorites", DAY, rows=10, seed=3)  # a third, plain name

    materialize(tmp_path, [("nasa", "meteorites")], DAY)

    log = deliveries(tmp_path, "nasa")
    assert {f: (v["status"], v["rows_read"]) for f, v in log.items()} == {
        "*.csv": ("loaded", 30),
        "meteorites[1].csv": ("loaded", 20),
        "meteorites.csv": ("loaded", 10),
    }


# --- 2. isolation: special files are a clear rejection, never a hang ------------------------


@pytest.mark.parametrize("kind", ["fifo", "folder", "nested", "vanishing"])
def test_special_entries_are_rejected_with_a_reason(tmp_path: Path, kind: str) -> None:
    _, good = land_media(tmp_path, "nga", rows=25, seed=6)
    folder = day_folder(tmp_path, "nga", "media_items")
    name = {"fifo": "pipe.csv", "folder": "media.csv", "nested": "sub", "vanishing": "gone.csv"}
    entry = folder / name[kind]
    if kind == "fifo":
        os.mkfifo(entry)  # reading it would wait for a writer forever
    elif kind == "folder":
        entry.mkdir()  # a directory named like a file
    elif kind == "nested":
        entry.mkdir()
        shutil.copy(folder / "media_items.csv", entry / "more.csv")
    files = delivered_files(folder)
    if kind == "vanishing":  # listed, then gone before it is read
        files = [*files, entry]

    started = time.monotonic()
    with duckdb.connect(str(tmp_path / "nga.duckdb")) as conn:
        loader = PartitionLoader(
            conn,
            agency="nga",
            contract=load_registry().contract_for("media_items", dt.date(2026, 2, 2)),
            day=dt.date(2026, 2, 2),
            run_id="r",
            raw_root=tmp_path / "raw",
        )
        result = load_partition(loader, files, delivery_manifest(folder))
    assert time.monotonic() - started < 30

    outcomes = {f.file: f for f in result.files}
    rejected = outcomes[name[kind]]
    expected = {
        "fifo": "delivery.not_a_file",
        "folder": "delivery.not_a_file",
        "nested": "delivery.not_a_file",
        "vanishing": "delivery.vanished",
    }
    assert (rejected.status, rejected.rule_id) == ("rejected", expected[kind])
    assert name[kind] in (rejected.reason or "")
    assert outcomes["media_items.csv"].status == "loaded"
    assert result.rows_curated == good


def test_huge_sparse_file_is_rejected_at_once(tmp_path: Path) -> None:
    """A 50 GB sparse file has no header: rejected after reading its head, and the hashing
    thread is not left reading 50 GB of zeros (the next file would wait for it)."""
    folder = day_folder(tmp_path, "nga", "media_items")
    folder.mkdir(parents=True)
    huge = folder / "huge.csv"
    with huge.open("wb") as handle:
        handle.truncate(50 << 30)
    started = time.monotonic()
    with pytest.raises(FileProblem) as rejected:
        inspect_file(huge)
    assert rejected.value.rule_id == "delivery.unreadable"
    assert "no line end" in rejected.value.reason
    small = folder / "small.csv"
    small.write_text("a,b\n1,2\n")
    facts = inspect_file(small)
    assert facts.sha256  # the hashing thread is free again
    facts.close()
    assert time.monotonic() - started < 20


# --- 4. complete deliveries only ------------------------------------------------------------


def test_file_that_grows_while_it_is_read_is_rejected_not_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer still appending when the load reads the file: the part read is not loaded,
    curated or published; the file is rejected with the reason."""
    source, _ = land_media(tmp_path, "nga", rows=40, seed=11)
    tail = source.read_bytes().splitlines(keepends=True)[-1]
    real = delivery_module.read_chunks

    def writer_still_at_work(facts: Any, chunk_rows: int = 0) -> Any:
        for i, chunk in enumerate(real(facts, 10)):
            if i == 0:
                with source.open("ab") as handle:  # the agency's copy goes on
                    handle.write(tail)
            yield chunk

    monkeypatch.setattr(delivery_module, "read_chunks", writer_still_at_work)
    assert not materialize(tmp_path, [("nga", "media_items")], DAY).success

    log = deliveries(tmp_path, "nga")["media_items.csv"]
    assert (log["status"], log["rule"]) == ("rejected", "delivery.changed_while_reading")
    assert "still being written" in log["reason"]
    assert raw_files(tmp_path, "nga", "media_items") == set()
    assert not (tmp_path / "published" / "nga" / "media_items" / f"{DAY}.parquet").exists()


def test_reader_rejects_a_file_that_changed_after_it_was_opened(tmp_path: Path) -> None:
    folder = day_folder(tmp_path, "nga", "media_items")
    folder.mkdir(parents=True)
    path = folder / "a.csv"
    path.write_text("a,b\n" + "".join(f"{i},x\n" for i in range(50)))
    facts = inspect_file(path)
    chunks = read_chunks(facts, chunk_rows=10)
    next(chunks)
    with path.open("a") as handle:
        handle.write("99,late\n")
    with pytest.raises(FileProblem) as changed:
        list(chunks)
    assert changed.value.rule_id == "delivery.changed_while_reading"


def test_file_written_after_the_marker_is_rejected(tmp_path: Path) -> None:
    source, _ = land_media(tmp_path, "nga", rows=20, seed=12)
    marker = source.parent / COMPLETION_MARKER
    marker.write_bytes(b"")
    past = time.time() - 60
    os.utime(marker, (past, past))  # the marker came first, the file changed after it

    with pytest.raises(FileProblem) as rejected:
        inspect_file(source)
    assert rejected.value.rule_id == "delivery.changed_after_marker"
    assert COMPLETION_MARKER in rejected.value.reason


# --- 1. reports are written only inside the agency's own outbox ----------------------------


def test_outbox_folder_that_is_a_link_is_never_written_through(tmp_path: Path) -> None:
    """Before: the three report files went wherever the link pointed, and the clean-up
    deleted matching temporary files there."""
    land_media(tmp_path, "nga", rows=20, seed=13)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    bait = elsewhere / ".summary.html.deadbeef.tmp"  # what the clean-up used to delete
    bait.write_text("not Flux's")
    target = tmp_path / "outbox" / "nga" / "media_items" / DAY
    target.parent.mkdir(parents=True)
    target.symlink_to(elsewhere)

    result = materialize(tmp_path, [("nga", "media_items")], DAY)

    assert not result.success
    failure = "\n".join(
        e.event_specific_data.error.to_string()
        for e in result.all_events
        if e.event_type_value == "STEP_FAILURE"
    )
    assert "delivery.symlink" in failure and f"media_items/{DAY} is a symbolic link" in failure
    assert sorted(p.name for p in elsewhere.iterdir()) == [bait.name]
    assert bait.read_text() == "not Flux's"


def test_report_replaces_a_link_at_a_report_name_instead_of_writing_through(
    tmp_path: Path,
) -> None:
    land_media(tmp_path, "nga", rows=20, seed=14)
    assert materialize(tmp_path, [("nga", "media_items")], DAY).success
    folder = tmp_path / "outbox" / "nga" / "media_items" / DAY
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (folder / "error_report.csv").unlink()
    (folder / "error_report.csv").symlink_to(victim)
    contract = load_registry().contract_for("media_items", dt.date(2026, 2, 2))

    with duckdb.connect(str(agency_db(tmp_path, "nga")), read_only=True) as conn:
        report = write_delivery_report(
            conn, agency="nga", contract=contract, day=dt.date(2026, 2, 2),
            outbox_root=tmp_path / "outbox",
        )  # fmt: skip

    assert victim.read_text() == "keep me"
    assert not report.error_report.is_symlink() and report.error_report.is_file()
    with (
        pytest.raises(UnsafePath) as foreign,
        duckdb.connect(str(agency_db(tmp_path, "nga")), read_only=True) as conn,
    ):
        write_delivery_report(
                conn, agency="nga", contract=contract, day=dt.date(2026, 2, 2),
                outbox_root=tmp_path / "outbox", folder=tmp_path / "outbox" / "nasa" / "x",
            )  # fmt: skip
    assert foreign.value.rule_id == "delivery.outside_outbox"


def test_manifest_still_checks_files_read_through_the_confined_path(tmp_path: Path) -> None:
    """The manifest path (sha256, rows) works unchanged on confined reads."""
    source, good = land_media(tmp_path, "nga", rows=30, seed=15)
    write_manifest(source.parent, {"media_items.csv": 30})
    assert materialize(tmp_path, [("nga", "media_items")], DAY).success
    assert published_rows(tmp_path, "nga", "media_items").height == good


def test_validate_outside_the_landing_zone_refuses_links_but_not_dot_dot(
    tmp_path: Path,
) -> None:
    """`flux validate FILE` takes any path the user types (``../x.csv`` included), but the
    file itself must be a regular file, not a link to one."""
    source, _ = land_media(tmp_path, "nga", rows=12, seed=16)
    mine = tmp_path / "work" / "media.csv"
    mine.parent.mkdir()
    shutil.copy(source, mine)
    (tmp_path / "work" / "link.csv").symlink_to(mine)
    day = dt.date(2026, 2, 2)

    ok = validate_file(
        tmp_path / "work" / ".." / "work" / "media.csv",
        dataset="media_items",
        day=day,
        agency="nga",
    )
    linked = validate_file(
        tmp_path / "work" / "link.csv", dataset="media_items", day=day, agency="nga"
    )

    assert [f.status for f in ok.result.files] == ["loaded"]
    assert [(f.status, f.rule_id) for f in linked.result.files] == [
        ("rejected", "delivery.symlink")
    ]
    # '..' never leads into a landing folder
    sneaky = tmp_path / "work" / ".." / "landing" / "nga" / "media_items" / DAY / "media_items.csv"
    with pytest.raises(FileProblem) as climbed:
        inspect_file(sneaky)
    assert climbed.value.rule_id == "delivery.outside_landing"
