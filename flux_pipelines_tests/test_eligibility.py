"""The ``<dataset>_eligibility`` table (issue 16, part A): real records loaded through the
real loader into a real DuckDB file, eligibility written per day, and the outcome recounted
independently from the source files (Tate's JSON records, the Library of Congress items'
front matter) and the data README's figures.

Tate's records are one JSON object per file; the loader reads a single-object ``.json`` file
holding an array of objects (Tate's ``contributors``) as a wrapper and rejects it
(``delivery.layout_mismatch``), so the tests deliver them as the agency's JSON Lines export:
one source object per line, as parsed from its file.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from flux_pipelines.collections.eligibility import (
    UnclassifiedStatement,
    unclassified_statements,
    write_eligibility,
)
from flux_pipelines.collections.use_cases import UseCases, load_use_cases
from flux_pipelines.contracts.loader import load_contract
from flux_pipelines.contracts.model import Contract
from flux_pipelines.errors import ConfigurationError
from flux_pipelines_tests.conftest import DAY, contract_doc, run_load, write_contract

PROJECT = Path(__file__).resolve().parents[1]
DATASETS = PROJECT / "contracts" / "datasets"
CC0 = "https://creativecommons.org/publicdomain/zero/1.0/"
# An explicit public-domain statement, as a reader of the sources would spot one.
EXPLICIT_PD = re.compile(r"public domain|\bcc0\b|creativecommons\.org/publicdomain|unlicense", re.I)


@pytest.fixture(scope="module")
def use_cases() -> UseCases:
    return load_use_cases(PROJECT / "contracts" / "use_cases.yaml")


def _rows(conn: duckdb.DuckDBPyConnection, table: str, day: dt.date) -> list[tuple[Any, ...]]:
    return conn.execute(
        f"SELECT * FROM {table} WHERE _partition_date = ? ORDER BY record_key, use_case", [day]
    ).fetchall()


def _by_key(
    conn: duckdb.DuckDBPyConnection, table: str, use_case: str
) -> dict[str, tuple[Any, ...]]:
    rows = conn.execute(
        "SELECT record_key, eligible, reason, rights_statement, rights_class, content_type, "
        f"object_kind, content_files, metadata_licence_class FROM {table} WHERE use_case = ?",
        [use_case],
    ).fetchall()
    return {r[0]: r[1:] for r in rows}


# --- Tate artworks --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tate(
    tmp_path_factory: pytest.TempPathFactory, real_data: Path, use_cases: UseCases
) -> tuple[duckdb.DuckDBPyConnection, dict[str, dict[str, Any]], Any]:
    folder = real_data / "collections" / "tate" / "artworks"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    tmp = tmp_path_factory.mktemp("tate")
    source = {}
    delivery = tmp / "landing" / "artworks.jsonl"
    delivery.parent.mkdir()
    with delivery.open("w", encoding="utf-8") as out:
        for path in sorted(folder.rglob("*.json")):
            record = json.loads(path.read_text(encoding="utf-8"))
            source[record["acno"]] = record
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    contract = load_contract(DATASETS / "artworks" / "1.0.0.odcs.yaml")
    conn = duckdb.connect(str(tmp / "nga.duckdb"))
    loaded = run_load(conn, contract, [delivery], tmp)
    assert loaded.rows_curated == len(source) == 4974
    result = write_eligibility(conn, contract, DAY, use_cases)
    return conn, source, result


@pytest.mark.realdata
def test_tate_files_load_as_delivered_one_record_each(
    tmp_path: Path, real_data: Path, use_cases: UseCases
) -> None:
    """Tate's own files (one object per work, with arrays of contributors) are records
    under ``jsonDocument: record``: every file one row, its rights statement kept."""
    folder = real_data / "collections" / "tate" / "artworks"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    files = sorted(folder.rglob("*.json"))[::250]  # 20 works across the collection
    source = {}
    for path in files:
        record = json.loads(path.read_text(encoding="utf-8"))
        source[record["acno"]] = record["thumbnailCopyright"]
    contract = load_contract(DATASETS / "artworks" / "1.0.0.odcs.yaml")
    conn = duckdb.connect(str(tmp_path / "nga.duckdb"))
    loaded = run_load(conn, contract, files, tmp_path)
    assert [o.status for o in loaded.files] == ["loaded"] * len(files)
    assert [o.rows_read for o in loaded.files] == [1] * len(files)
    stored = dict(conn.execute("SELECT acno, thumbnail_copyright FROM artworks").fetchall())
    assert stored == {k: v.strip() if v else None for k, v in source.items()}
    result = write_eligibility(conn, contract, DAY, use_cases)
    assert result.warnings == ()


@pytest.mark.slow
@pytest.mark.realdata
def test_tate_every_record_judged_for_every_use_case(tate: Any, use_cases: UseCases) -> None:
    conn, source, result = tate
    assert result.records == len(source)
    assert {u.use_case: u.records for u in result.use_cases} == {
        u.id: len(source) for u in use_cases.use_cases
    }
    keys = {
        k
        for (k,) in conn.execute("SELECT DISTINCT record_key FROM artworks_eligibility").fetchall()
    }
    assert keys == set(source)
    assert result.warnings == (), "every Tate statement is classified"


@pytest.mark.slow
@pytest.mark.realdata
def test_tate_third_party_copyright_and_missing_statements_are_excluded_with_reasons(
    tate: Any,
) -> None:
    conn, source, _ = tate
    rows = _by_key(conn, "artworks_eligibility", "ai-training")
    stated = {k: r["thumbnailCopyright"] for k, r in source.items()}
    third_party = {k: s for k, s in stated.items() if s is not None and s != "© Tate"}
    missing = [k for k, s in stated.items() if s is None]
    tate_own = [k for k, s in stated.items() if s == "© Tate"]
    assert (len(third_party), len(missing), len(tate_own)) == (1144, 3524, 306)  # the README's
    for key, statement in third_party.items():
        eligible, reason, original, rights_class = rows[key][:4]
        # the loader trims values ("© Damien Hirst and Science Ltd. " loads without the space)
        assert (eligible, rights_class, original) == (False, "in_copyright", statement.strip())
        assert reason.startswith("not eligible for ai-training: content rights in_copyright (")
        assert " ".join(statement.split())[:40] in reason
    for key in missing:
        assert rows[key][:2] == (False, "not eligible for ai-training: no rights statement")
    for key in tate_own:
        assert rows[key][:2] == (
            False,
            "not eligible for ai-training: content rights in_copyright (© Tate)",
        )


@pytest.mark.slow
@pytest.mark.realdata
def test_tate_only_explicit_public_domain_is_eligible(tate: Any) -> None:
    """Recounted from the source files: records whose statement is explicitly public domain
    (none in Tate's snapshot), and nothing else, are eligible for ai-training; nothing here
    states a licence research accepts either."""
    conn, source, result = tate
    explicit = {
        k
        for k, r in source.items()
        if r["thumbnailCopyright"] and EXPLICIT_PD.search(r["thumbnailCopyright"])
    }
    for use_case in ("ai-training", "research", "vr"):
        eligible = {k for k, r in _by_key(conn, "artworks_eligibility", use_case).items() if r[0]}
        assert eligible == explicit == set()
        assert result.eligible(use_case) == 0
    top = dict(next(u for u in result.use_cases if u.use_case == "ai-training").top_reasons)
    # Causes count once whatever the statement quoted: every © line is one cause.
    stated = [r["thumbnailCopyright"] for r in source.values()]
    assert top["no rights statement"] == sum(1 for s in stated if s is None) == 3524
    assert top["content rights in_copyright"] == sum(1 for s in stated if s is not None)


@pytest.mark.slow
@pytest.mark.realdata
def test_tate_content_type_kind_files_and_metadata_licence(tate: Any) -> None:
    conn, source, _ = tate
    rows = _by_key(conn, "artworks_eligibility", "vr")
    kinds = Counter(r["classification"] for r in source.values())
    assert kinds[None] == 26
    for key, record in source.items():
        content_type, kind, files, licence = rows[key][4:8]
        assert kind == record["classification"]
        assert content_type == (None if record["classification"] is None else "image")
        assert files == ([record["thumbnailUrl"]] if record["thumbnailUrl"] else [])
        assert licence == "public_domain"
    assert sum(1 for r in rows.values() if r[6]) == 4259  # thumbnails present, as the README says


@pytest.mark.slow
@pytest.mark.realdata
def test_tate_rewriting_a_day_gives_the_same_rows(tate: Any, use_cases: UseCases) -> None:
    conn, _, _ = tate
    before = _rows(conn, "artworks_eligibility", DAY)
    contract = load_contract(DATASETS / "artworks" / "1.0.0.odcs.yaml")
    write_eligibility(conn, contract, DAY, use_cases)
    assert _rows(conn, "artworks_eligibility", DAY) == before
    assert len(before) == 3 * 4974


# --- Library of Congress audio items --------------------------------------------------------
def _readme_counts(real_data: Path) -> tuple[int, int, int]:
    readme = (real_data / "collections" / "README.md").read_text(encoding="utf-8")
    match = re.search(
        r"public-domain dedication (\d+); free to use, the American Folklife Center asks for "
        r"respect (\d+); free to use, attribution recommended (\d+)",
        readme,
    )
    assert match, "the data README's rights counts moved"
    dedication, respect, attribution = (int(g) for g in match.groups())
    return dedication, respect, attribution


@pytest.fixture(scope="module")
def loc(
    tmp_path_factory: pytest.TempPathFactory, real_data: Path, use_cases: UseCases
) -> tuple[duckdb.DuckDBPyConnection, dict[str, dict[str, Any]], Any]:
    folder = real_data / "collections" / "loc-citizen-dj" / "_items"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    tmp = tmp_path_factory.mktemp("loc")
    source = {}
    delivery = tmp / "landing" / "audio_items.jsonl"  # the agency's export of its front matter
    delivery.parent.mkdir()
    with delivery.open("w", encoding="utf-8") as out:
        for path in sorted(folder.rglob("*.md")):
            front = yaml.safe_load(path.read_text(encoding="utf-8").split("---")[1])
            source[str(front["uid"])] = front
            out.write(json.dumps(front, ensure_ascii=False) + "\n")
    contract = load_contract(DATASETS / "audio_items" / "1.0.0.odcs.yaml")
    conn = duckdb.connect(str(tmp / "library-of-congress.duckdb"))
    loaded = run_load(conn, contract, [delivery], tmp)
    assert loaded.rows_curated == len(source) == 273
    return conn, source, write_eligibility(conn, contract, DAY, use_cases)


@pytest.mark.slow
@pytest.mark.realdata
def test_loc_eligibility_counts_follow_the_three_sentences(loc: Any, real_data: Path) -> None:
    conn, source, result = loc
    dedication, respect, attribution = _readme_counts(real_data)
    assert (dedication, respect, attribution) == (132, 89, 52)
    assert result.eligible("research") == dedication + respect + attribution == len(source)
    assert result.eligible("ai-training") == dedication
    assert result.eligible("vr") == 0  # sound recordings are not image or 3d content
    explicit = {k for k, r in source.items() if EXPLICIT_PD.search(r["rights"])}
    rows = _by_key(conn, "audio_items_eligibility", "ai-training")
    assert {k for k, r in rows.items() if r[0]} == explicit and len(explicit) == dedication
    for key, (eligible, reason, original, rights_class, *_rest) in rows.items():
        assert original == source[key]["rights"]
        if eligible:
            assert reason.startswith(
                "eligible for ai-training: content rights public_domain (This work has been "
                "dedicated to the public domain"
            )
            assert reason.endswith("metadata licence public_domain (https://unlicense.org/)")
        else:
            assert rights_class == "no_known_restrictions"
            assert reason.startswith(
                "not eligible for ai-training: content rights no_known_restrictions (This sound "
                "recording is free to use and reuse."
            )
    vr = _by_key(conn, "audio_items_eligibility", "vr")
    assert {r[1] for r in vr.values()} == {
        "not eligible for vr: content type audio (takes image or 3d)"
    }


# --- small deliveries: keys, warnings, idempotency, refusals --------------------------------
PROPERTIES: list[dict[str, Any]] = [
    {"name": "title", "logicalType": "string"},
    {"name": "rights", "logicalType": "string"},
    {"name": "licence", "logicalType": "string"},
    {"name": "media", "logicalType": "string"},
]
MAPPING = [
    {"property": "rightsColumn", "value": "rights"},
    {"property": "metadataLicenceColumn", "value": "licence"},
    {"property": "contentType", "value": "image"},
    {"property": "contentFileColumns", "value": ["media"]},
]
CSV = (
    "title,rights,licence,media\n"
    f"a,CC0,{CC0},a.jpg\n"
    f"b,© Somebody,{CC0},\n"
    f"c,,{CC0},c.jpg\n"
    f"d,see our web site,{CC0},d.jpg\n"
    f"e,CC BY 4.0,odd licence,e.jpg\n"
    f"f,see our web site,{CC0},f.jpg\n"
)


def _items(tmp_path: Path, custom: list[dict[str, Any]] = MAPPING) -> Contract:
    return load_contract(
        write_contract(tmp_path / "contracts", contract_doc(PROPERTIES, custom=custom))
    )


def _deliver(tmp_path: Path, conn: duckdb.DuckDBPyConnection, day: dt.date, text: str) -> None:
    path = tmp_path / "landing" / day.isoformat() / "items.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    result = run_load(conn, _items(tmp_path), [path], tmp_path, day=day)
    assert result.rows_curated == text.count("\n") - 1


def test_keys_decisions_and_unclassified_warnings(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, use_cases: UseCases
) -> None:
    _deliver(tmp_path, conn, DAY, CSV)
    contract = _items(tmp_path)
    result = write_eligibility(conn, contract, DAY, use_cases)
    rows = conn.execute(
        "SELECT record_key, eligible, reason, content_files FROM items_eligibility "
        "WHERE use_case = 'ai-training' ORDER BY _row_number"
    ).fetchall()
    assert [r[0] for r in rows] == [f"items.csv#{n}" for n in range(1, 7)]  # no identifier
    assert [r[1] for r in rows] == [True, False, False, False, False, False]
    assert rows[1][2] == "not eligible for ai-training: content rights in_copyright (© Somebody)"
    assert rows[2][2] == "not eligible for ai-training: no rights statement"
    assert rows[4][2] == (
        "not eligible for ai-training: content rights cc_by (CC BY 4.0); metadata licence not "
        "classified (odd licence: a statement Flux does not recognise)"
    )
    assert [r[3] for r in rows] == [["a.jpg"], [], ["c.jpg"], ["d.jpg"], ["e.jpg"], ["f.jpg"]]
    assert result.eligible("research") == 1 and result.eligible("vr") == 1
    assert result.warnings == (
        UnclassifiedStatement(
            "items", DAY, "rights", "see our web site", 2, "a statement Flux does not recognise"
        ),
        UnclassifiedStatement(
            "items", DAY, "licence", "odd licence", 1, "a statement Flux does not recognise"
        ),
    )
    message = result.warnings[0].message
    assert "items 2026-01-05: rights 'see our web site' (2 record(s))" in message
    assert "flux_pipelines/collections/rights.py" in message
    assert unclassified_statements(conn, "items", DAY, contract) == list(result.warnings)
    assert unclassified_statements(conn, "items", DAY + dt.timedelta(days=1)) == []


def test_a_day_is_replaced_alone_and_rewritten_identically(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, use_cases: UseCases
) -> None:
    day2 = DAY + dt.timedelta(days=1)
    _deliver(tmp_path, conn, DAY, CSV)
    _deliver(tmp_path, conn, day2, f"title,rights,licence,media\nz,CC0,{CC0},z.jpg\n")
    contract = _items(tmp_path)
    write_eligibility(conn, contract, DAY, use_cases)
    first = _rows(conn, "items_eligibility", DAY)
    second = write_eligibility(conn, contract, day2, use_cases)
    assert second.records == 1 and second.eligible("ai-training") == 1
    assert _rows(conn, "items_eligibility", DAY) == first
    write_eligibility(conn, contract, DAY, use_cases)
    assert _rows(conn, "items_eligibility", DAY) == first
    assert len(first) == 6 * 3
    # a day without records writes none (and keeps the others)
    empty = write_eligibility(conn, contract, DAY + dt.timedelta(days=5), use_cases)
    assert (empty.records, empty.use_cases) == (0, ())
    assert conn.execute("SELECT count(*) FROM items_eligibility").fetchone() == (21,)


def test_inside_the_callers_transaction_it_rolls_back_with_it(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, use_cases: UseCases
) -> None:
    _deliver(tmp_path, conn, DAY, CSV)
    contract = _items(tmp_path)
    write_eligibility(conn, contract, DAY, use_cases)
    before = _rows(conn, "items_eligibility", DAY)
    newer = use_cases.model_copy(update={"version": "9.9.9"})
    conn.begin()
    write_eligibility(conn, contract, DAY, newer, own_transaction=False)
    versions = conn.execute("SELECT DISTINCT use_cases_version FROM items_eligibility").fetchall()
    assert versions == [("9.9.9",)]
    conn.rollback()
    assert _rows(conn, "items_eligibility", DAY) == before
    assert {r[-2] for r in before} == {use_cases.version}


def test_refusals_name_what_to_fix(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection, use_cases: UseCases
) -> None:
    _deliver(tmp_path, conn, DAY, CSV)
    with pytest.raises(ConfigurationError, match="maps no rights or content"):
        write_eligibility(conn, _items(tmp_path, custom=[]), DAY, use_cases)
    renamed = _items(tmp_path).renamed({"rights": "rights_statement"})
    with pytest.raises(
        ConfigurationError, match=r"no column\(s\) rights_statement.*storage_contract"
    ):
        write_eligibility(conn, renamed, DAY, use_cases)
