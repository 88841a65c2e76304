"""The CCN data-dictionary importer: every mapping branch, and the real dictionary and studies.

- a tiny hand-made dictionary (tmp_path, no real data) exercises each mapping rule, the
  encodings (cp1252, BOM) and the errors;
- with ../shared/data present (``realdata``): the generated contracts mirror the dictionary,
  the committed files are exactly what the importer generates, and the real study files fit.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from flux_pipelines.contracts.importers import ccn
from flux_pipelines.contracts.loader import load_contract
from flux_pipelines.contracts.model import Contract
from flux_pipelines.errors import ConfigurationError
from flux_pipelines.slugs import normalise_header

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATASETS_DIR = PROJECT_ROOT / "contracts" / "datasets"
REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CCN = REAL_DATA / "ccn"

STRUCTURE_HEADER = [
    "table", "attribute_name", "attribute_definition", "required", "data_type",
    "format_unit_codes", "number", "data_category", "parent_data_category", "quality_class",
    "uncontrolled", "conditional_on", "conditional_variables", "conditional_on_absence",
]  # fmt: skip

# table, attribute, definition, required, data_type, format_unit_codes, number,
# conditional_on, conditional_variables
TINY: list[tuple[str, ...]] = [
    ("cores", "study_id", "Study \u201cid\u201d.", "required", "character", "NA", "NA", "NA", "NA"),
    ("cores", "core_id", "Core id.", "required", "character", "NA", "NA", "NA", "NA"),
    ("cores", "year", "Year.", "required", "numeric", "nominalYear", "integer", "NA", "NA"),
    ("cores", "latitude", "Latitude.", "required", "numeric", "degree", "real", "NA", "NA"),
    ("cores", "elevation", "Elevation.", "optional", "numeric", "meter", "real", "NA", "NA"),
    ("cores", "elevation_datum", "Datum.", "conditional", "factor",
     "NAVD88 = Datum; MSL = Mean sea level", "NA", "elevation", "NA"),
    ("cores", "habitat", "Habitat.", "encouraged", "factor",
     "marsh = A marsh; x = ignored, the vocabulary file wins", "NA", "NA", "NA"),
    ("cores", "habitat_method", "How.", "encouraged", "factor",
     "field observation = Seen; measurement = Measured; also sieved", "NA",
     "habitat; not_a_cores_column", "NA"),
    ("cores", "max_depth", "Max depth.", "added automatically", "numeric", "centimeter", "NA",
     "NA", "NA"),
    ("cores", "orphan_note", "Note.", "conditional", "character", "NA", "NA",
     "column_of_another_table", "NA"),
    ("depthseries", "depth_min", "Top.", "required", "numeric", "centimeter", "real", "NA", "NA"),
    ("depthseries", "depth_max", "Bottom.", "required", "numeric", "centimeter", "real", "NA",
     "NA"),
    ("depthseries", "dry_bulk_density", "DBD.", "required", "numeric", "gramsPerCubicCentimeter",
     "real", "NA", "NA"),
    ("depthseries", "fraction_carbon", "Carbon.", "optional", "numeric", "dimensionless",
     "real", "NA", "NA"),
    ("depthseries", "cs137_activity", "Cs.", "optional", "numeric", "NA", "real", "NA", "NA"),
    ("depthseries", "cs137_activity_se", "Cs se.", "optional", "numeric", "NA", "real", "NA",
     "NA"),
    ("depthseries", "cs137_unit", "Unit.", "conditional", "character", "NA", "NA",
     "cs137_activity; cs137_activity_se", "NA"),
    ("depthseries", "marker_date", "Marker year.", "optional", "Date", "YYYY", "NA", "NA", "NA"),
    ("depthseries", "marker_date_se", "Marker se.", "optional", "Date", "NA", "NA", "NA", "NA"),
    ("methods", "carbon_measured_or_modeled", "Measured?", "optional", "factor",
     "measured = Measured; modeled = Modeled", "NA", "NA", "NA"),
    ("methods", "fraction_carbon_type", "Type.", "conditional", "factor",
     "organic carbon = OC; total carbon = TC", "NA", "carbon_measured_or_modeled", "measured"),
    ("study_citations", "year", "Publication year.", "added automatically", "character", "NA",
     "NA", "NA", "NA"),
]  # fmt: skip
TINY_VARIABLES: list[tuple[str, str, str]] = [
    ("habitat", "marsh", "Tidal marsh."),
    ("habitat", "mangrove", "Tropical and dominated by mangroves."),
    ("elevation_datum", "NAVD88", "North American Vertical Datum of 1988."),
    ("elevation_datum", "MSL", "Mean Sea Level."),
]


def _csv(header: list[str], rows: list[tuple[str, ...]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def write_dictionary(
    folder: Path,
    rows: list[tuple[str, ...]] = TINY,
    variables: list[tuple[str, str, str]] = TINY_VARIABLES,
) -> Path:
    """The CCN layout: structure in cp1252 (as published), variables in UTF-8 with a BOM."""
    folder.mkdir(parents=True, exist_ok=True)
    padded = [(*r[:7], "NA", "NA", "NA", "NA", r[7], r[8], "NA") for r in rows]
    structure = _csv(STRUCTURE_HEADER, padded)
    (folder / ccn.STRUCTURE_FILE).write_bytes(structure.encode("cp1252"))
    cv = _csv(["attribute_name", "variable_name", "variable_definition"], list(variables))
    (folder / ccn.VARIABLES_FILE).write_bytes(cv.encode("utf-8-sig"))
    return folder


def _props(text: str) -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(text)
    return {p["name"]: p for p in doc["schema"][0]["properties"]}


def _load(tmp_path: Path, dataset: str, text: str) -> Contract:
    path = tmp_path / "out" / dataset / "1.0.0.odcs.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return load_contract(path)


@pytest.fixture
def tiny(tmp_path: Path) -> dict[str, str]:
    source = write_dictionary(tmp_path / "ccn")
    return ccn.import_ccn_dictionary(source, ["cores", "depthseries", "methods", "study_citations"])


# --- the mapping, on a tiny hand-made dictionary --------------------------------------------


def test_every_generated_contract_loads(tmp_path: Path, tiny: dict[str, str]) -> None:
    assert set(tiny) == {"ccn_cores", "ccn_depthseries", "ccn_methods", "ccn_study_citations"}
    for dataset, text in tiny.items():
        contract = _load(tmp_path, dataset, text)
        assert contract.dataset == dataset
        assert contract.domain == "science"
        assert contract.null_values == ("", "NA")
        assert str(contract.effective_from) == "2000-01-01"
    cores = _load(tmp_path, "ccn_cores", tiny["ccn_cores"])
    assert cores.id == "ccn-cores-v1"
    assert cores.column_names == [r[1] for r in TINY if r[0] == "cores"], "dictionary order"
    assert (
        _load(tmp_path, "ccn_study_citations", tiny["ccn_study_citations"]).id
        == "ccn-study-citations-v1"
    )


def test_generated_header_names_source_and_command(tiny: dict[str, str]) -> None:
    text = tiny["ccn_cores"]
    head = text.split("\nversion:")[0]
    assert "GENERATED" in head and "DO NOT EDIT BY HAND" in head
    assert ccn.STRUCTURE_FILE in head and ccn.VARIABLES_FILE in head
    assert ccn.COMMAND in head
    assert all(line.startswith("#") for line in head.splitlines())


def test_requirement_levels(tmp_path: Path, tiny: dict[str, str]) -> None:
    cores = _load(tmp_path, "ccn_cores", tiny["ccn_cores"])
    assert cores.required_columns == ["study_id", "core_id", "year", "latitude"]
    # the column must be delivered; an empty cell is fatal only for the row's identity
    assert cores.rule("year.required").severity == "warning"
    assert cores.rule("core_id.required").severity == "fatal"
    # encouraged without a condition: a completeness warning on the column
    encouraged = cores.rule("habitat.encouraged")
    assert (encouraged.kind, encouraged.severity, encouraged.category) == (
        "required", "warning", "completeness",
    )  # fmt: skip
    # encouraged with a condition in the table: only rows that have the condition
    conditional_encouraged = cores.rule("habitat_method.encouraged")
    assert conditional_encouraged.expression == "habitat IS NULL OR habitat_method IS NOT NULL"
    # conditional -> warning row rule; added automatically / optional -> nothing
    datum = cores.rule("elevation_datum.conditional")
    assert datum.expression == "elevation IS NULL OR elevation_datum IS NOT NULL"
    assert (datum.severity, datum.category) == ("warning", "completeness")
    ids = {r.id for r in cores.rules}
    assert not {i for i in ids if i.startswith(("max_depth.", "elevation."))} - {
        "max_depth.type", "elevation.type",
    }  # fmt: skip
    assert not {i for i in ids if i.startswith("orphan_note.")}, "condition outside the table"


def test_conditions_on_several_columns_and_on_values(tmp_path: Path, tiny: dict[str, str]) -> None:
    depth = _load(tmp_path, "ccn_depthseries", tiny["ccn_depthseries"])
    assert depth.rule("cs137_unit.conditional").expression == (
        "(cs137_activity IS NULL AND cs137_activity_se IS NULL) OR cs137_unit IS NOT NULL"
    )
    methods = _load(tmp_path, "ccn_methods", tiny["ccn_methods"])
    rule = methods.rule("fraction_carbon_type.conditional")
    assert rule.expression == (
        "carbon_measured_or_modeled IS NULL OR carbon_measured_or_modeled NOT IN ('measured') "
        "OR fraction_carbon_type IS NOT NULL"
    )
    rows = pl.DataFrame(
        {
            "carbon_measured_or_modeled": ["measured", "modeled", None, "measured"],
            "fraction_carbon_type": [None, None, None, "organic carbon"],
        }
    )
    assert rows.select(pl.sql_expr(rule.expression or "")).to_series().to_list() == [
        False, True, True, True,
    ]  # fmt: skip


def test_data_types_units_and_dates(tmp_path: Path, tiny: dict[str, str]) -> None:
    cores = _load(tmp_path, "ccn_cores", tiny["ccn_cores"])
    types = {c.name: c.logical_type for c in cores.columns}
    assert types["year"] == "integer"
    assert types["latitude"] == "number"
    assert types["max_depth"] == "number", "numeric without number= is real"
    assert types["study_id"] == "string"
    assert types["habitat"] == "string"
    assert cores.column("elevation").unit == "meter"
    assert cores.column("study_id").unit is None
    assert cores.column("study_id").description == "Study \u201cid\u201d.", "cp1252 decoded"
    depth = _load(tmp_path, "ccn_depthseries", tiny["ccn_depthseries"])
    marker = depth.column("marker_date")
    assert (marker.logical_type, marker.date_format) == ("date", "%Y")
    assert depth.column("marker_date_se").logical_type == "string", "Date without a format"
    assert depth.column("cs137_activity").unit is None, "NA is no unit"
    assert "format" not in (
        _props(tiny["ccn_depthseries"])["marker_date_se"].get("logicalTypeOptions") or {}
    )


def test_factor_vocabularies(tmp_path: Path, tiny: dict[str, str]) -> None:
    cores = _load(tmp_path, "ccn_cores", tiny["ccn_cores"])
    habitat = cores.column("habitat").allowed_values
    assert [(v.value, v.description) for v in habitat] == [
        ("marsh", "Tidal marsh."), ("mangrove", "Tropical and dominated by mangroves."),
    ], "controlled_variables.csv wins over format_unit_codes"  # fmt: skip
    assert not cores.column("habitat").case_insensitive_values
    method = cores.column("habitat_method").allowed_values
    assert [(v.value, v.description) for v in method] == [
        ("field observation", "Seen"), ("measurement", "Measured; also sieved"),
    ], "fallback: parsed from format_unit_codes"  # fmt: skip
    assert cores.rule("habitat.allowed_values").severity == "fatal"


def test_known_physical_constraints(tmp_path: Path, tiny: dict[str, str]) -> None:
    cores = _load(tmp_path, "ccn_cores", tiny["ccn_cores"])
    lat = cores.column("latitude")
    assert (lat.minimum, lat.maximum) == (-90, 90)
    assert cores.rule("year.maximum").severity == "warning"
    assert cores.rule("year.minimum").severity == "fatal"
    depth = _load(tmp_path, "ccn_depthseries", tiny["ccn_depthseries"])
    dbd = depth.column("dry_bulk_density")
    assert (dbd.minimum, dbd.exclusive_minimum) == (0, True)
    fc = depth.column("fraction_carbon")
    assert (fc.minimum, fc.maximum) == (0, 1)
    assert depth.column("depth_min").minimum == 0
    order = depth.rule("depth_order")
    assert (order.expression, order.severity) == ("depth_min <= depth_max", "fatal")
    citations = _load(tmp_path, "ccn_study_citations", tiny["ccn_study_citations"])
    assert citations.column("year").minimum is None, "bounds apply to numeric columns only"
    assert not any(r.id == "depth_order" for r in cores.rules)


def test_main_writes_the_files(tmp_path: Path) -> None:
    source = write_dictionary(tmp_path / "ccn")
    ccn.main(["--source", str(source), "--out", str(tmp_path / "datasets")])
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("datasets/*/*"))
    assert written == [
        "datasets/ccn_cores/1.0.0.odcs.yaml", "datasets/ccn_depthseries/1.0.0.odcs.yaml",
    ]  # fmt: skip
    ccn.main(["--source", str(source), "--out", str(tmp_path / "all"), "--tables", "all"])
    assert len(list(tmp_path.glob("all/*/1.0.0.odcs.yaml"))) == 4


def test_main_reports_errors_without_a_traceback(tmp_path: Path) -> None:
    source = write_dictionary(tmp_path / "ccn")
    with pytest.raises(SystemExit, match="no table"):
        ccn.main(["--source", str(source), "--out", str(tmp_path), "--tables", "nope"])


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (("cores", "Core ID", "x", "required", "character", "NA", "NA", "NA", "NA"), "snake_case"),
        (("cores", "a", "x", "mandatory", "character", "NA", "NA", "NA", "NA"), "mandatory"),
        (("cores", "a", "x", "required", "blob", "NA", "NA", "NA", "NA"), "blob"),
        (("cores", "a", "x", "required", "numeric", "NA", "double", "NA", "NA"), "double"),
        (("cores", "a", "x", "required", "factor", "NA", "NA", "NA", "NA"), "allowed values"),
    ],
)
def test_dictionary_defects_are_configuration_errors(
    tmp_path: Path, row: tuple[str, ...], message: str
) -> None:
    source = write_dictionary(tmp_path / "ccn", rows=[row], variables=[])
    with pytest.raises(ConfigurationError, match=message):
        ccn.import_ccn_dictionary(source, ["cores"])


def test_duplicate_attribute_is_an_error(tmp_path: Path) -> None:
    row = ("cores", "a", "x", "optional", "character", "NA", "NA", "NA", "NA")
    source = write_dictionary(tmp_path / "ccn", rows=[row, row])
    with pytest.raises(ConfigurationError, match="repeats"):
        ccn.import_ccn_dictionary(source, ["cores"])


def test_unreadable_sources_are_configuration_errors(tmp_path: Path) -> None:
    source = write_dictionary(tmp_path / "ccn")
    (source / ccn.VARIABLES_FILE).write_bytes(b"attribute_name,variable_name\nhabitat,marsh\n")
    with pytest.raises(ConfigurationError, match="variable_definition"):
        ccn.import_ccn_dictionary(source, ["cores"])
    (source / ccn.STRUCTURE_FILE).write_bytes(b"table,attribute_name\n\x81\x8d,x\n")
    with pytest.raises(ConfigurationError, match="neither UTF-8 nor cp1252"):
        ccn.import_ccn_dictionary(source, ["cores"])
    with pytest.raises(ConfigurationError, match="cannot be read"):
        ccn.import_ccn_dictionary(tmp_path / "missing", ["cores"])


# --- the real dictionary and studies --------------------------------------------------------

needs_real_data = pytest.mark.skipif(
    not (CCN / ccn.STRUCTURE_FILE).is_file(),
    reason=f"real CCN data not found at {CCN} (the shared data folder is absent)",
)


def _structure() -> pl.DataFrame:
    text = (CCN / ccn.STRUCTURE_FILE).read_bytes().decode("cp1252")
    return pl.read_csv(io.StringIO(text), infer_schema=False)


def _study_files(table: str) -> list[Path]:
    return sorted((CCN / "studies").glob(f"*/*_{table}.csv"))


def _read_study(path: Path) -> pl.DataFrame:
    text = path.read_bytes().decode("utf-8-sig")
    frame = pl.read_csv(io.StringIO(text), infer_schema=False, null_values=["", "NA"])
    return frame.rename({c: normalise_header(c) for c in frame.columns})


@pytest.fixture(scope="module")
def real() -> dict[str, Contract]:
    return {
        t: load_contract(DATASETS_DIR / f"ccn_{t}" / "1.0.0.odcs.yaml")
        for t in ("cores", "depthseries")
    }


@pytest.mark.realdata
@needs_real_data
def test_committed_contracts_are_exactly_what_the_importer_generates() -> None:
    generated = ccn.import_ccn_dictionary(CCN, ["cores", "depthseries"])
    for dataset, text in generated.items():
        committed = (DATASETS_DIR / dataset / "1.0.0.odcs.yaml").read_text(encoding="utf-8")
        assert committed == text, (
            f"{dataset} was edited by hand or the importer changed; regenerate: {ccn.COMMAND}"
        )


@pytest.mark.realdata
@needs_real_data
@pytest.mark.parametrize(("table", "count"), [("cores", 39), ("depthseries", 49)])
def test_one_property_per_dictionary_attribute(
    real: dict[str, Contract], table: str, count: int
) -> None:
    attributes = _structure().filter(pl.col("table") == table)["attribute_name"].to_list()
    assert len(attributes) == count
    assert real[table].column_names == attributes


@pytest.mark.realdata
@needs_real_data
@pytest.mark.parametrize("table", ["cores", "depthseries"])
def test_required_attributes_are_required(real: dict[str, Contract], table: str) -> None:
    rows = _structure().filter(pl.col("table") == table)
    required = rows.filter(pl.col("required") == "required")["attribute_name"].to_list()
    assert required, "the dictionary marks some attributes required"
    assert real[table].required_columns == required


@pytest.mark.realdata
@needs_real_data
@pytest.mark.parametrize("table", ["cores", "depthseries"])
def test_factor_enums_equal_controlled_variables(real: dict[str, Contract], table: str) -> None:
    variables = pl.read_csv(CCN / ccn.VARIABLES_FILE, infer_schema=False)
    factors = _structure().filter((pl.col("table") == table) & (pl.col("data_type") == "factor"))
    assert factors.height > 0
    for name in factors["attribute_name"]:
        expected = variables.filter(pl.col("attribute_name") == name)["variable_name"].to_list()
        actual = [v.value for v in real[table].column(name).allowed_values]
        assert actual == expected, name


@pytest.mark.realdata
@needs_real_data
def test_known_constraints_are_in_the_real_contracts(real: dict[str, Contract]) -> None:
    cores, depth = real["cores"], real["depthseries"]
    assert (cores.column("latitude").minimum, cores.column("latitude").maximum) == (-90, 90)
    assert (cores.column("longitude").minimum, cores.column("longitude").maximum) == (-180, 180)
    assert (cores.column("month").minimum, cores.column("month").maximum) == (1, 12)
    assert (cores.column("day").minimum, cores.column("day").maximum) == (1, 31)
    assert cores.column("year").minimum == 1900
    assert depth.rule("depth_order").severity == "fatal"
    assert depth.rule("depth_order").columns == ("depth_min", "depth_max")
    for name in ("fraction_carbon", "fraction_organic_matter"):
        assert (depth.column(name).minimum, depth.column(name).maximum) == (0, 1)
    dbd = depth.column("dry_bulk_density")
    assert (dbd.minimum, dbd.exclusive_minimum) == (0, True)
    assert depth.column("depth_min").minimum == 0
    assert depth.column("marker_date").date_format == "%Y"
    assert depth.rule("fraction_organic_matter.encouraged").severity == "warning"
    # uniqueness only where the studies prove it (core_id within a study's cores file)
    assert [c.name for c in cores.columns if c.unique or c.primary_key] == ["core_id"]
    assert not [c.name for c in depth.columns if c.unique or c.primary_key]
    assert cores.identifier == [] and depth.identifier == []


@pytest.mark.realdata
@needs_real_data
def test_every_ccn_table_generates_a_loadable_contract(tmp_path: Path) -> None:
    tables = ccn.known_tables(CCN)
    assert len(tables) == 7
    documents = ccn.import_ccn_dictionary(CCN, tables)
    total = sum(len(_load(tmp_path, d, text).columns) for d, text in documents.items())
    assert total == _structure().height == 168


@pytest.mark.realdata
@needs_real_data
@pytest.mark.parametrize("table", ["cores", "depthseries"])
def test_real_studies_fit_the_contracts(real: dict[str, Contract], table: str) -> None:
    """Headers all map; vocabularies differ from real values by content, never by case."""
    contract = real[table]
    files = _study_files(table)
    assert len(files) > 90
    case_only: list[str] = []
    for path in files:
        frame = _read_study(path)
        assert set(frame.columns) <= set(contract.column_names), path.name
        for column in contract.columns:
            if not column.allowed_values or column.name not in frame.columns:
                continue
            allowed = {v.value for v in column.allowed_values}
            lowered = {a.lower(): a for a in allowed}
            for value in frame[column.name].drop_nulls().unique().to_list():
                if value not in allowed and value.lower() in lowered:
                    case_only.append(f"{path.name}: {column.name}={value!r}")
    assert not case_only, case_only


@pytest.mark.realdata
@needs_real_data
def test_core_id_is_unique_within_each_cores_file() -> None:
    """The evidence behind ``core_id.unique`` (and why depthseries has no unique column)."""
    for path in _study_files("cores"):
        ids = _read_study(path)["core_id"]
        assert ids.null_count() == 0 and ids.n_unique() == len(ids), path.name
    # depthseries: every column repeats (or is empty) somewhere, so no column can be unique
    unique_everywhere: set[str] | None = None
    for path in _study_files("depthseries"):
        frame = _read_study(path)
        unique_here = {
            c for c in frame.columns if frame[c].null_count() == 0 and frame[c].is_unique().all()
        }
        unique_everywhere = (
            unique_here if unique_everywhere is None else unique_everywhere & unique_here
        )
    assert unique_everywhere == set()
