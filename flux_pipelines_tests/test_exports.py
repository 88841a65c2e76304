"""Use-case exports end to end, on the real collections data through Dagster's assets.

Three agencies' deliveries of one day: the National Gallery of Art's artworks (a sample of
Tate's own one-object .json files, which state no explicit public-domain image right), the
Library of Congress's audio items (the citizen-dj front matter as JSON Lines: three rights
sentences) and both agencies' digital objects (the 17 real content files in a Flux content
manifest, each record stating the licence of the repository its file comes from). Every
expectation is recounted here from the sources, independently of Flux's classifier.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
import yaml

from flux_pipelines.audit.trail import AuditTrail
from flux_pipelines.collections.use_cases import load_use_cases
from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.defs.collections.exports import ELIGIBILITY_CHECK, export_assets
from flux_pipelines.exports.build import build_export
from flux_pipelines.exports.sources import export_paths
from flux_pipelines.names import CONTENT_FOLDER, published_root
from flux_pipelines.resources.warehouse import FluxWarehouse
from flux_pipelines_tests.conftest import materialize

DAY = "2026-01-05"
NEXT_DAY = "2026-01-06"
EXPLICIT_PD = re.compile(r"public domain|\bcc0\b|creativecommons\.org/publicdomain|unlicense", re.I)
# The rights each source repository states for its files (data README, "license of the copy").
REPOSITORY_RIGHTS = {
    "LibraryOfCongress/citizen-dj": "The Unlicense: released into the public domain",
    "Smithsonian/dpo-packrat": "Apache License 2.0",
    "LibraryOfCongress/ndnp-open-ocr": "https://creativecommons.org/publicdomain/zero/1.0/",
    "LibraryOfCongress/chronam": "Public domain",
    "LibraryOfCongress/ADCTest": "Public domain",
    "NationalGalleryOfArt/opendata": "https://creativecommons.org/publicdomain/zero/1.0/",
}
KINDS = {"image": "image", "pdf": "document", "text": "text", "audio": "audio", "3d": "3d"}
# The glTF scene names its model by the repository's name (the copy has a prefix).
RENAMED = {"si-dpo_sea_turtle-20k-thumb.glb": "sea_turtle-20k-thumb.glb"}
pytestmark = [pytest.mark.slow, pytest.mark.realdata]


def _land_tate(home: Path, collections: Path) -> dict[str, str | None]:
    folder = home / "landing" / "nga" / "artworks" / DAY
    folder.mkdir(parents=True)
    stated = {}
    for path in sorted((collections / "tate" / "artworks").rglob("*.json"))[::40]:
        record = json.loads(path.read_text(encoding="utf-8"))
        stated[record["acno"]] = record["thumbnailCopyright"]
        (folder / path.name).write_bytes(path.read_bytes())
    return stated


def _land_loc_audio(home: Path, collections: Path, day: str, every: int) -> dict[str, str]:
    folder = home / "landing" / "library-of-congress" / "audio_items" / day
    folder.mkdir(parents=True)
    rights = {}
    items = sorted((collections / "loc-citizen-dj" / "_items").rglob("*.md"))
    offset = 0 if day == DAY else 1
    with (folder / "items.jsonl").open("w", encoding="utf-8") as out:
        for path in items[offset::every]:
            front = yaml.safe_load(path.read_text(encoding="utf-8").split("---")[1])
            rights[str(front["uid"])] = front.get("rights")
            out.write(json.dumps(front, ensure_ascii=False, default=str) + "\n")
    return rights


def _manifest_rows(collections: Path) -> list[dict[str, str]]:
    with (collections / "MANIFEST.tsv").open(encoding="utf-8") as f:
        return [
            r for r in csv.DictReader(f, delimiter="\t") if r["staged_path"].startswith("content/")
        ]


def _land_objects(home: Path, collections: Path) -> dict[str, dict[str, str]]:
    """Each agency's digital objects: a record per content file (the glTF's scene document
    travels as its sidecar, not as an object) and the package's Flux manifest."""
    objects: dict[str, dict[str, str]] = {}
    by_agency: dict[str, list[dict[str, str]]] = {"library-of-congress": [], "nga": []}
    for row in _manifest_rows(collections):
        source = collections / row["staged_path"]
        agency = (
            "library-of-congress" if row["source_repo"].startswith("LibraryOfCongress") else "nga"
        )
        by_agency[agency].append(row)
    for agency, rows in by_agency.items():
        day = home / "landing" / agency / "digital_objects" / DAY
        content = day / CONTENT_FOLDER
        content.mkdir(parents=True)
        files, records = [], []
        for i, row in enumerate(rows):
            source = collections / row["staged_path"]
            name = RENAMED.get(source.name, source.name)
            (content / name).write_bytes(source.read_bytes())
            files.append({"path": name, "sha256": hashlib.sha256(source.read_bytes()).hexdigest()})
            if source.name.endswith(".svx.json"):
                continue  # the scene document: the model's sidecar
            object_id = f"{agency}-{i:04d}"
            rights = REPOSITORY_RIGHTS[row["source_repo"]]
            kind = KINDS[row["staged_path"].split("/")[1]]
            records.append({"object_id": object_id, "title": name, "object_kind": kind,
                            "file_name": name, "rights_statement": rights,
                            "source_repository": row["source_repo"]})  # fmt: skip
            objects[object_id] = {"agency": agency, "file": name, "rights": rights, "kind": kind}
        (content / "manifest.json").write_text(json.dumps({"files": files}), encoding="utf-8")
        with (day / "objects.csv").open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)
    return objects


PAIRS = [
    ("nga", "artworks"),
    ("library-of-congress", "audio_items"),
    ("library-of-congress", "digital_objects"),
    ("nga", "digital_objects"),
]


def _exports(home: Path, instance: dg.DagsterInstance) -> Any:
    return dg.materialize(
        export_assets(load_registry()),
        resources={"warehouse": FluxWarehouse(home=str(home))},
        instance=instance,
        raise_on_error=False,
    )


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory, real_data: Path) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("collections-home")
    collections = real_data / "collections"
    sources = {
        "tate": _land_tate(home, collections),
        "audio": _land_loc_audio(home, collections, DAY, every=3),
        "objects": _land_objects(home, collections),
    }
    instance = dg.DagsterInstance.ephemeral()
    ingest = materialize(home, PAIRS, DAY, instance=instance)
    assert ingest.success
    exports = _exports(home, instance)
    assert exports.success
    return {"home": home, "sources": sources, "instance": instance, "exports": exports}


def _part_rows(home: Path, use_case: str, kind: str) -> pl.DataFrame:
    folder = getattr(export_paths(home, use_case), kind)
    files = sorted(folder.glob("*.parquet"))
    return (
        pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")
        if files
        else pl.DataFrame()
    )


def _datasheet(home: Path, use_case: str) -> dict[str, Any]:
    return json.loads((export_paths(home, use_case).docs / "datasheet.json").read_text())


def test_ai_training_holds_exactly_the_explicit_public_domain_records(
    loaded: dict[str, Any],
) -> None:
    home, sources = loaded["home"], loaded["sources"]
    records = _part_rows(home, "ai-training", "records")
    got = {(r["dataset"], r["record_key"]) for r in records.iter_rows(named=True)}
    expected = {
        ("audio_items", k) for k, s in sources["audio"].items() if s and EXPLICIT_PD.search(s)
    }
    expected |= {
        ("digital_objects", k)
        for k, o in sources["objects"].items()
        if EXPLICIT_PD.search(o["rights"])
    }
    assert got == expected and expected
    assert not any(d == "artworks" for d, _ in got)  # no Tate image states public domain
    assert set(records["rights_class"]) == {"public_domain"}
    sheet = _datasheet(home, "ai-training")
    assert sheet["records"]["eligible"] == len(expected)
    # every exported record names the delivered file and hash it came from
    assert records["_file_sha256"].str.len_chars().min() == 64
    assert {p["records_exported"] for p in sheet["provenance"]} and sum(
        p["records_exported"] for p in sheet["provenance"]
    ) == len(expected)


def test_tate_third_party_and_missing_statements_are_excluded_with_their_reasons(
    loaded: dict[str, Any],
) -> None:
    stated = loaded["sources"]["tate"]
    sheet = _datasheet(loaded["home"], "ai-training")
    reasons = {r["reason"]: r["count"] for r in sheet["excluded_by_reason"]["records"]}
    assert reasons["no rights statement"] == sum(1 for s in stated.values() if s is None)
    # every stated Tate line (© Tate or a third party's) keeps the image in copyright
    assert reasons["content rights in_copyright"] == sum(1 for s in stated.values() if s)
    nga = next(a for a in sheet["by_agency"] if (a["agency"], a["dataset"]) == ("nga", "artworks"))
    assert (nga["records_in"], nga["records_eligible"]) == (len(stated), 0)


def test_files_follow_their_records_and_their_own_rights(loaded: dict[str, Any]) -> None:
    home, objects = loaded["home"], loaded["sources"]["objects"]
    ai_files = _part_rows(home, "ai-training", "files")
    pd_files = {o["file"] for o in objects.values() if EXPLICIT_PD.search(o["rights"])}
    assert set(ai_files["path"]) == pd_files
    research = _part_rows(home, "research", "files")
    glb = RENAMED["si-dpo_sea_turtle-20k-thumb.glb"]
    assert glb not in set(research["path"])  # its scene reserves all rights: a contradiction
    reasons = _datasheet(home, "research")["excluded_by_reason"]["files"]
    assert any(r["reason"].startswith("content rights contradict") for r in reasons), reasons
    dng = research.filter(pl.col("path").str.ends_with(".dng")).row(0, named=True)
    assert (dng["kind"], dng["container"]) == ("image", "TIFF")
    assert dng["detected_type"] == "image/x-adobe-dng"


def test_vr_takes_records_only_with_a_file_it_may_use(loaded: dict[str, Any]) -> None:
    """vr takes images and 3D models of 512 pixels a side: an image record whose only file
    is smaller is left out, and the file is listed with its reason."""
    home, objects = loaded["home"], loaded["sources"]["objects"]
    records = _part_rows(home, "vr", "records")
    files = _part_rows(home, "vr", "files")
    assert set(records["record_key"]) == set(files["record_key"]) and records.height
    assert (files["width"].min() or 0) >= 512 and (files["height"].min() or 0) >= 512
    small = next(k for k, o in objects.items() if o["file"] == "loc-citizen-dj_laguardia.png")
    assert small not in set(records["record_key"])
    sheet = _datasheet(home, "vr")
    left = {f["path"]: f["reason"] for f in sheet["excluded_files"]}
    assert (
        "image 220x272 pixels, under 512 on its shorter side"
        in left["loc-citizen-dj_laguardia.png"]
    )
    causes = {r["reason"]: r["count"] for r in sheet["excluded_by_reason"]["records"]}
    assert causes["no content file it may use"] >= 1
    assert sheet["records"]["eligible"] == records.height


def test_research_adds_what_it_should(loaded: dict[str, Any]) -> None:
    home, sources = loaded["home"], loaded["sources"]
    ai = {
        tuple(r)
        for r in _part_rows(home, "ai-training", "records").select("dataset", "record_key").rows()
    }
    research = {
        tuple(r)
        for r in _part_rows(home, "research", "records").select("dataset", "record_key").rows()
    }
    assert ai < research
    # every LoC audio item has a permissive sentence; the Apache-licensed objects count too
    added = research - ai
    assert {k for d, k in added if d == "audio_items"} == {
        k for k, s in sources["audio"].items() if s and not EXPLICIT_PD.search(s)
    }
    assert {k for d, k in added if d == "digital_objects"} == {
        k for k, o in sources["objects"].items() if o["rights"] == "Apache License 2.0"
    }


def test_the_blocking_check_passed_and_a_rebuild_rewrites_nothing(loaded: dict[str, Any]) -> None:
    home = loaded["home"]
    checks = {e.check_name: e.passed for e in loaded["exports"].get_asset_check_evaluations()}
    assert checks == {ELIGIBILITY_CHECK: True}
    before = {p: p.read_bytes() for p in export_paths(home, "research").records.glob("*.parquet")}
    result = build_export(home, load_registry(), AuditTrail(home), load_use_cases(), "research")
    assert result.passed and not result.rewritten and len(result.kept) == 4
    assert {p: p.read_bytes() for p in before} == before


def test_parts_built_by_earlier_rules_are_rebuilt_not_kept(loaded: dict[str, Any]) -> None:
    """A manifest written by an earlier builder (its selection rules changed since): every
    part is rebuilt, never kept for the check to refuse on every build."""
    home = loaded["home"]
    manifest_path = export_paths(home, "vr").docs / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for part in manifest["parts"].values():
        part["sources"]["builder"] = 1
    manifest_path.write_text(json.dumps(manifest))
    result = build_export(home, load_registry(), AuditTrail(home), load_use_cases(), "vr")
    assert result.passed and not result.kept and len(result.rewritten) == 4


def test_an_export_is_reproducible_byte_for_byte(loaded: dict[str, Any]) -> None:
    home = loaded["home"]
    paths = export_paths(home, "ai-training")
    first = {p.name: p.read_bytes() for p in [*paths.records.glob("*"), *paths.docs.glob("*")]}
    for folder in (paths.records, paths.files, paths.docs):
        for f in folder.glob("*"):
            f.unlink()
    result = build_export(home, load_registry(), AuditTrail(home), load_use_cases(), "ai-training")
    assert result.passed and len(result.rewritten) == 4
    again = {p.name: p.read_bytes() for p in [*paths.records.glob("*"), *paths.docs.glob("*")]}
    assert again == first


def test_a_new_day_adds_its_records_and_rewrites_only_its_part(
    loaded: dict[str, Any], real_data: Path
) -> None:
    home = loaded["home"]
    # as many items as the first day: a sharp drop would be held back by the gate
    added = _land_loc_audio(home, real_data / "collections", NEXT_DAY, every=3)
    assert materialize(home, [("library-of-congress", "audio_items")], NEXT_DAY,
                       instance=loaded["instance"]).success  # fmt: skip
    result = build_export(home, load_registry(), AuditTrail(home), load_use_cases(), "research")
    assert not result.sources.held_back, result.sources.held_back
    assert result.rewritten == [f"library-of-congress~audio_items~{NEXT_DAY}.parquet"]
    assert len(result.kept) == 4
    new = pl.read_parquet(export_paths(home, "research").records / result.rewritten[0])
    assert set(new["record_key"]) == {k for k, s in added.items() if s}


def test_a_day_the_gate_holds_back_is_left_out_and_listed(
    loaded: dict[str, Any], real_data: Path
) -> None:
    """A delivery far smaller than the days before raises an anomaly ERROR: the
    certification gate holds the day back, so no export takes its records."""
    home, day = loaded["home"], "2026-01-07"
    _land_loc_audio(home, real_data / "collections", day, every=40)
    assert materialize(home, [("library-of-congress", "audio_items")], day,
                       instance=loaded["instance"]).success  # fmt: skip
    result = build_export(home, load_registry(), AuditTrail(home), load_use_cases(), "research")
    held = [(v.agency, v.dataset, v.day.isoformat()) for v in result.sources.held_back]
    assert held == [("library-of-congress", "audio_items", day)]
    assert not (
        export_paths(home, "research").records / f"library-of-congress~audio_items~{day}.parquet"
    ).exists()
    sheet = _datasheet(home, "research")
    assert [(d["agency"], d["day"]) for d in sheet["held_back"]] == [("library-of-congress", day)]


def test_an_ineligible_record_slipped_into_the_sources_fails_the_check(
    loaded: dict[str, Any], tmp_path: Path
) -> None:
    """A published eligibility copy edited to call a Tate record eligible: the check
    re-derives from the exported statement, fails, and the export stays as it was."""
    home = loaded["home"]
    target = published_root(home) / "nga" / "artworks_eligibility" / f"{DAY}.parquet"
    original = target.read_bytes()
    frame = pl.read_parquet(target)
    forged = frame.with_columns(
        pl.when(pl.col("use_case") == "ai-training")
        .then(True)
        .otherwise(pl.col("eligible"))
        .alias("eligible")
    )
    before = sorted(export_paths(home, "ai-training").records.glob("*.parquet"))
    try:
        forged.write_parquet(target)
        result = build_export(
            home, load_registry(), AuditTrail(home), load_use_cases(), "ai-training"
        )
    finally:
        target.write_bytes(original)
    assert not result.passed
    assert any("not eligible for ai-training" in p for p in result.problems), result.problems
    assert sorted(export_paths(home, "ai-training").records.glob("*.parquet")) == before


def test_the_agency_report_has_an_eligibility_section(loaded: dict[str, Any]) -> None:
    home, stated = loaded["home"], loaded["sources"]["tate"]
    page = next((home / "outbox" / "nga").rglob("artworks/**/summary.html"), None) or next(
        p for p in (home / "outbox").rglob("summary.html") if "artworks" in str(p)
    )
    html = page.read_text(encoding="utf-8")
    assert "Eligibility for use cases" in html
    assert f"no rights statement ({sum(1 for s in stated.values() if s is None)})" in html
