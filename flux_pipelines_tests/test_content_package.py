"""Content packages (issue 16, part B): BagIt bags and Flux content manifests in a day's
``content/`` folder, stored in ``<dataset>_content`` with problems in the quarantine.

Bags are real bags made by the ``bagit`` library in tmp; bagit's own ``validate`` is the
independent judge each corruption is compared with. Metadata is loaded by the real loader
(CSV -> curated table), so record links come from curated rows as in production.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import bagit
import dagster as dg
import duckdb
import pytest
from PIL import Image

from flux_pipelines.content.load import ContentResult, load_content
from flux_pipelines.contracts.loader import load_contract
from flux_pipelines.contracts.model import CONTENT_RULES, Contract
from flux_pipelines.ingest.delivery import delivered_files
from flux_pipelines.names import CONTENT_FOLDER, DatasetTables
from flux_pipelines_tests.conftest import DAY, contract_doc, run_load, write_contract

AGENCY = "nga"


def png_bytes(width: int = 3, height: int = 2) -> bytes:
    """A real PNG written by Pillow."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "red").save(buffer, "PNG")
    return buffer.getvalue()


PNG = png_bytes()


# --- helpers shared with the other content tests ---------------------------------------------


def items_contract(tmp_path: Path) -> Contract:
    """A small collections contract: a record id, a title and the record's content file."""
    doc = contract_doc(
        [
            {"name": "objectid", "logicalType": "integer", "primaryKey": True, "required": True},
            {"name": "title", "logicalType": "string"},
            {"name": "image_file", "logicalType": "string"},
        ]
    )
    return load_contract(write_contract(tmp_path / "contracts", doc))


def day_folder(tmp_path: Path, day: dt.date = DAY) -> Path:
    folder = tmp_path / "home" / "landing" / AGENCY / "items" / day.isoformat()
    (folder / CONTENT_FOLDER).mkdir(parents=True)
    return folder


def load_metadata(
    conn: duckdb.DuckDBPyConnection,
    contract: Contract,
    day: Path,
    links: Sequence[str],
    tmp_path: Path,
) -> None:
    """Curate one record per link (objectid 1, 2, ...) through the real loader."""
    lines = ["objectid,title,image_file"] + [f"{i},t{i},{link}" for i, link in enumerate(links, 1)]
    (day / "items.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run_load(conn, contract, [day / "items.csv"], tmp_path)
    assert result.rows_curated == len(links)


def write_flux_manifest(content: Path, entries: list[dict[str, str]]) -> None:
    (content / "manifest.json").write_text(json.dumps({"files": entries}), encoding="utf-8")


def entry(content: Path, path: str, **extra: str) -> dict[str, str]:
    """A manifest entry for the file at ``path`` with its sha256 computed here."""
    digest = hashlib.sha256((content / path).read_bytes()).hexdigest()
    return {"path": path, "sha256": digest, **extra}


def load(
    conn: duckdb.DuckDBPyConnection, contract: Contract, day: Path, run_id: str = "run-1"
) -> ContentResult:
    return load_content(
        conn,
        contract,
        agency=AGENCY,
        day=DAY,
        folder=day / CONTENT_FOLDER,
        run_id=run_id,
        link_columns=["image_file"],
    )


def stored(conn: duckdb.DuckDBPyConnection, contract: Contract) -> dict[str, tuple]:
    table = DatasetTables.for_dataset(contract.dataset).content
    rows = conn.execute(
        f"SELECT _file, record_key, kind, detected_type, sha256 FROM {table} ORDER BY _file"
    ).fetchall()
    return {r[0]: r[1:] for r in rows}


def quarantined(conn: duckdb.DuckDBPyConnection, contract: Contract) -> dict[str, set[str]]:
    """file -> rules of every content problem in the quarantine."""
    table = DatasetTables.for_dataset(contract.dataset).quarantine
    found: dict[str, set[str]] = {}
    for file, rule in conn.execute(
        f"SELECT _file, rule_id FROM {table} WHERE starts_with(rule_id, 'content.') "
        "OR starts_with(_file, 'content')"
    ).fetchall():
        found.setdefault(file, set()).add(rule)
    return found


def accounted(conn: duckdb.DuckDBPyConnection, contract: Contract, files: set[str]) -> None:
    """Every delivered payload file is stored or quarantined, never both, never neither."""
    kept, held = set(stored(conn, contract)), set(quarantined(conn, contract))
    assert kept | (held & files) == files
    assert not kept & held


def make_bag(day: Path, files: dict[str, bytes]) -> Path:
    content = day / CONTENT_FOLDER
    for name, data in files.items():
        (content / name).parent.mkdir(parents=True, exist_ok=True)
        (content / name).write_bytes(data)
    bagit.make_bag(str(content), checksums=["sha256"])
    return content


def bagit_says(content: Path) -> list[bagit.ManifestErrorDetail]:
    """bagit's own verdict on the bag's checksums (the independent judge)."""
    try:
        bagit.Bag(str(content)).validate()
    except bagit.BagValidationError as exc:
        return list(exc.details)
    return []


def bagit_completeness(content: Path) -> tuple[set[str], set[str]]:
    """bagit's own (listed but missing, present but unlisted) payload files."""
    missing, unlisted = bagit.Bag(str(content)).compare_manifests_with_fs()
    return set(missing), set(unlisted)


def refresh_tagmanifest(content: Path) -> None:
    """Re-compute the tag manifest after a test edited a payload manifest on purpose."""
    tag = content / "tagmanifest-sha256.txt"
    lines = []
    for line in tag.read_text().splitlines():
        _, name = line.split(maxsplit=1)
        lines.append(f"{hashlib.sha256((content / name).read_bytes()).hexdigest()}  {name}")
    tag.write_text("\n".join(lines) + "\n")


# --- BagIt --------------------------------------------------------------------------------------


def test_valid_bag_is_stored_whole(tmp_path: Path, conn: duckdb.DuckDBPyConnection) -> None:
    contract, day = items_contract(tmp_path), day_folder(tmp_path)
    notes = b"Letter, 1895.\nSecond line.\n"
    content = make_bag(day, {"images/a.png": PNG, "notes/a.txt": notes})
    assert bagit_says(content) == []
    load_metadata(conn, contract, day, ["data/images/a.png", "notes/a.txt"], tmp_path)

    result = load(conn, contract, day)

    assert (result.package, result.files_in, result.files_stored) == ("bagit", 2, 2)
    assert result.problems == ()
    rows = stored(conn, contract)
    png = rows["content/data/images/a.png"]
    assert png == ("1", "image", "image/png", hashlib.sha256(PNG).hexdigest())
    assert rows["content/data/notes/a.txt"][:3] == ("2", "text", "text/plain")


def test_bag_checksum_mismatch_quarantines_that_file(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    contract, day = items_contract(tmp_path), day_folder(tmp_path)
    content = make_bag(day, {"a.png": PNG, "b.txt": b"plain text\n"})
    (content / "data" / "b.txt").write_bytes(b"plain TEXT\n")  # same size: Oxum still holds
    [detail] = bagit_says(content)
    assert isinstance(detail, bagit.ChecksumMismatch) and detail.path == "data/b.txt"
    load_metadata(conn, contract, day, ["a.png", "b.txt"], tmp_path)

    result = load(conn, contract, day)

    assert quarantined(conn, contract) == {"content/data/b.txt": {"content.checksum_mismatch"}}
    assert set(stored(conn, contract)) == {"content/data/a.png"}
    assert (result.files_in, result.files_stored, result.files_quarantined) == (2, 1, 1)
    [problem] = result.problems
    assert hashlib.sha256(b"plain TEXT\n").hexdigest() in problem.reason


def test_bag_missing_and_unlisted_payload_files(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    contract, day = items_contract(tmp_path), day_folder(tmp_path)
    content = make_bag(day, {"a.png": PNG, "gone.txt": b"x\n"})
    (content / "data" / "gone.txt").unlink()
    (content / "data" / "extra.txt").write_bytes(b"slipped in\n")
    assert bagit_completeness(content) == ({"data/gone.txt"}, {"data/extra.txt"})
    load_metadata(conn, contract, day, ["a.png", "extra.txt"], tmp_path)

    result = load(conn, contract, day)

    assert quarantined(conn, contract) == {
        "content/data/gone.txt": {"content.missing_file"},
        "content/data/extra.txt": {"content.unlisted_file"},
    }
    assert set(stored(conn, contract)) == {"content/data/a.png"}
    assert result.files_in == 2 and result.files_stored + result.files_quarantined == 2


def test_bag_manifest_traversal_is_reported_and_never_followed(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    contract, day = items_contract(tmp_path), day_folder(tmp_path)
    secret = tmp_path / "home" / "secret.txt"
    secret.write_text("not the agency's\n")
    content = make_bag(day, {"a.png": PNG})
    with (content / "manifest-sha256.txt").open("a") as manifest:
        manifest.write(f"{'0' * 64}  data/../../../../../secret.txt\n")
        manifest.write(f"{'1' * 64}  /etc/passwd\n")
    refresh_tagmanifest(content)
    with pytest.raises(bagit.BagError, match="unsafe"):  # bagit alone gives up on the bag
        bagit.Bag(str(content))
    load_metadata(conn, contract, day, ["a.png"], tmp_path)

    result = load(conn, contract, day)

    assert result.problems_by_rule == {"content.manifest_traversal": 2}
    assert {p.value for p in result.problems} == {"../../../../secret.txt", "/etc/passwd"}
    assert set(stored(conn, contract)) == {"content/data/a.png"}  # the rest is still verified


def test_edited_bag_manifest_makes_every_file_unverifiable(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    """The tag manifest guards the payload manifest: once they disagree, no checksum in
    the bag can be trusted, so nothing is stored."""
    contract, day = items_contract(tmp_path), day_folder(tmp_path)
    content = make_bag(day, {"a.png": PNG, "b.txt": b"b\n"})
    manifest = content / "manifest-sha256.txt"
    manifest.write_text(manifest.read_text() + "\n")  # edited after bagging
    load_metadata(conn, contract, day, ["a.png", "b.txt"], tmp_path)

    result = load(conn, contract, day)

    assert stored(conn, contract) == {}
    held = quarantined(conn, contract)
    assert held["content/data/a.png"] == held["content/data/b.txt"] == {"content.package_invalid"}
    assert "manifest-sha256.txt" in result.problems[0].reason
    assert (result.files_in, result.files_quarantined) == (2, 2)


# --- Flux content manifest, links, idempotency ------------------------------------------------


def test_flux_manifest_declares_types_and_records(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    contract, day = items_contract(tmp_path), day_folder(tmp_path)
    content = day / CONTENT_FOLDER
    (content / "scans").mkdir()
    (content / "scans" / "p1.png").write_bytes(PNG)
    (content / "extra.png").write_bytes(PNG + b"")
    write_flux_manifest(
        content,
        [
            entry(content, "scans/p1.png", media_type="image/png"),
            entry(content, "./extra.png", record="2"),  # assigned by the manifest, not a link
        ],
    )
    load_metadata(conn, contract, day, ["content/scans/p1.png", ""], tmp_path)

    result = load(conn, contract, day)

    assert result.problems == ()
    rows = {
        r[0]: r[1:]
        for r in conn.execute(
            "SELECT path, record_key, declared_type, declared_by, width FROM items_content"
        ).fetchall()
    }
    assert rows == {
        "scans/p1.png": ("1", "image/png", "manifest", 3),
        "extra.png": ("2", "image/png", "extension", 3),
    }


def test_reload_replaces_the_day_and_keeps_row_quarantine(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    contract, day = items_contract(tmp_path), day_folder(tmp_path)
    content = day / CONTENT_FOLDER
    (content / "a.png").write_bytes(PNG)
    (content / "empty.png").write_bytes(b"")
    write_flux_manifest(content, [entry(content, "a.png"), entry(content, "empty.png")])
    (day / "items.csv").write_text("objectid,title,image_file\n1,a,a.png\n2,b,empty.png\nx,c,\n")
    run_load(conn, contract, [day / "items.csv"], tmp_path)  # row 3 quarantined: objectid.type
    row_problems = conn.execute("SELECT count(*) FROM items_quarantine").fetchone()

    first = load(conn, contract, day, run_id="run-1")
    before = conn.execute("SELECT * EXCLUDE (_run_id, _loaded_at) FROM items_content").fetchall()
    second = load(conn, contract, day, run_id="run-2")

    after = conn.execute("SELECT * EXCLUDE (_run_id, _loaded_at) FROM items_content").fetchall()
    assert before == after and len(after) == 1
    assert first.problems_by_rule == second.problems_by_rule == {"content.empty_file": 1}
    total = conn.execute("SELECT count(*) FROM items_quarantine").fetchone()
    assert total is not None and row_problems is not None
    assert total[0] == row_problems[0] + 1  # the row violation kept, one content entry
    assert conn.execute(
        "SELECT DISTINCT _run_id FROM items_quarantine WHERE rule_id = 'content.empty_file'"
    ).fetchall() == [("run-2",)]


def test_every_content_rule_is_in_the_catalogue() -> None:
    """Rules raised by the content package all have words for agencies."""
    package = Path(__file__).parents[1] / "flux_pipelines" / "content"
    source = "".join(p.read_text() for p in package.glob("*.py"))
    raised = set(re.findall(r'"(content\.[a-z_]+)"', source))
    assert raised and raised <= set(CONTENT_RULES)


def test_day_without_content_reports_local_links_only(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    """No content/ folder: a record naming a file is missing it; one naming a URL links to
    content hosted elsewhere, which no package holds."""
    contract, day = items_contract(tmp_path), day_folder(tmp_path)
    (day / CONTENT_FOLDER).rmdir()
    links = ["scans/a.png", "https://media.example.gov/b.jpg", ""]
    load_metadata(conn, contract, day, links, tmp_path)

    result = load(conn, contract, day)

    assert (result.package, result.files_in) == ("none", 0)
    [missing] = result.problems
    assert (missing.rule_id, missing.file, missing.record_key) == (
        "content.record_file_missing",
        "scans/a.png",
        "1",
    )


# --- the reserved folder beside the metadata -----------------------------------------------------


def test_content_folder_is_not_a_data_file(tmp_path: Path) -> None:
    day = day_folder(tmp_path)
    (day / "items.csv").write_text("objectid\n1\n")
    (day / CONTENT_FOLDER / "a.png").write_bytes(PNG)
    assert delivered_files(day) == [day / "items.csv"]


def test_a_link_named_content_is_still_rejected(tmp_path: Path) -> None:
    day = day_folder(tmp_path)
    (day / CONTENT_FOLDER).rmdir()
    (day / "items.csv").write_text("objectid\n1\n")
    os.symlink(tmp_path, day / CONTENT_FOLDER)
    assert delivered_files(day) == [day / CONTENT_FOLDER, day / "items.csv"]


def test_content_link_is_refused_by_the_content_loader(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    contract, day = items_contract(tmp_path), day_folder(tmp_path)
    (day / CONTENT_FOLDER).rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "a.png").write_bytes(PNG)
    os.symlink(elsewhere, day / CONTENT_FOLDER)
    load_metadata(conn, contract, day, ["a.png"], tmp_path)

    result = load(conn, contract, day)

    assert result.problems_by_rule == {"delivery.symlink": 1}
    assert (result.files_in, result.files_stored) == (0, 0)


def test_sensor_does_not_report_the_content_folder(tmp_path: Path) -> None:
    from flux_pipelines_tests.test_hostile_sensor import MEDIA, age, findings
    from flux_pipelines_tests.test_landing_sensor import OLD, land, tick

    day = land(tmp_path, agency="nga", dataset="media_items")
    (day / CONTENT_FOLDER).mkdir()
    (day / CONTENT_FOLDER / "a.png").write_bytes(PNG)
    (day / "sub").mkdir()
    age(day / CONTENT_FOLDER, OLD)
    age(day / "sub", OLD)

    media = tick(tmp_path, dg.DagsterInstance.ephemeral(), sensor=MEDIA)

    reported = findings(tmp_path)
    assert reported.get(f"nga/media_items/{day.name}/sub") == "delivery.not_a_file"
    assert f"nga/media_items/{day.name}/{CONTENT_FOLDER}" not in reported
    assert len(media.requests) == 1
