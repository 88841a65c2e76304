"""Generate Flux contracts from the Coastal Carbon Network (CCN) data dictionary.

The CCN publishes its rules as CSV (``ccrcn_database_structure.csv``: one row per table x
attribute; ``controlled_variables.csv``: the allowed values of every factor). Retyping its
168 attribute rules by hand would drift from the source, so contracts are generated::

    uv run python -m flux_pipelines.contracts.importers.ccn \\
        --source ../shared/data/ccn --out contracts/datasets

writes ``<out>/ccn_<table>/1.0.0.odcs.yaml`` (cores and depthseries by default; ``--tables``
picks others or ``all``). The files are generated: fix the importer, not the YAML. They are
ODCS v3.0.2 and pass ``datacontract lint`` (flux_pipelines_tests/test_contracts_lint.py).

Encodings: the dictionary CSVs are not all UTF-8 (the structure file is cp1252); each file is
read as UTF-8 (byte-order mark dropped) and else as cp1252; anything else fails loudly.

Mapping, per dictionary row of the requested table (one property per attribute, in order):

- ``required``: ``required`` -> ``required: true`` (the column must be delivered); an empty
  cell is a warning ``<col>.required`` except for study_id and core_id (fatal).
  ``encouraged`` -> a warning ``<col>.encouraged`` (completeness): a library check
  ``rule: nullValues``, or, when ``conditional_on`` names columns of the same table, a row rule
  ``<cond> IS NULL OR <col> IS NOT NULL`` so rows without the measurement stay quiet.
  ``conditional`` -> a warning row rule ``<col>.conditional`` of the same shape when it can be
  stated cleanly, else nothing. ``optional`` / ``added automatically`` -> not required.
- conditions: ``conditional_on`` lists columns (``;``); the attribute is expected when *any*
  listed column of this table is filled (columns of other tables are dropped, a sound
  under-approximation). ``conditional_variables`` (the trigger values) are honoured for one
  text condition column (``<cond> NOT IN (...)``); several columns with values, or values on a
  numeric column, are ambiguous and yield no rule. ``conditional_on_absence`` is not used
  (in the source it contradicts ``conditional_on`` for loss_on_ignition_sample_mass).
- ``data_type``: ``numeric`` + ``number=integer`` -> ``integer``; other ``numeric`` ->
  ``number``; ``character`` -> ``string``; ``factor`` -> ``string`` + ``enum`` from
  controlled_variables.csv (exact case: the real studies use the dictionary's spelling),
  falling back to ``format_unit_codes`` (``value = definition; ...``); ``Date`` -> ``date``
  with a strftime format when ``format_unit_codes`` is a known date code (``YYYY`` ->
  ``%Y``: the real marker_date values are all four-digit years), else ``string``.
- ``format_unit_codes`` of a numeric attribute -> customProperty ``unit``.
- physical constraints the dictionary lacks come from ``_BOUNDS`` and ``_ROW_RULES`` below
  (small on purpose, keyed by attribute name, applied only to numeric columns), and
  evidence-based uniqueness from ``_UNIQUE``.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import yaml
from open_data_contract_standard.model import (
    CustomProperty,
    DataQuality,
    Description,
    EnumValue,
    OpenDataContractStandard,
    Relationship,
    SchemaObject,
    SchemaProperty,
)

from flux_pipelines.contracts.logical_types import ROWS
from flux_pipelines.errors import ConfigurationError
from flux_pipelines.files import sha256_file
from flux_pipelines.slugs import check_column, check_slug
from flux_pipelines.sql import literal

STRUCTURE_FILE = "ccrcn_database_structure.csv"
VARIABLES_FILE = "controlled_variables.csv"
VERSION = "1.0.0"
API_VERSION = "v3.0.2"
DOMAIN = "science"
EFFECTIVE_FROM = "2000-01-01"
NULL_VALUES = ["", "NA"]
DEFAULT_TABLES = ("cores", "depthseries")
COMMAND = (
    "uv run python -m flux_pipelines.contracts.importers.ccn "
    "--source ../shared/data/ccn --out contracts/datasets"
)

_STRUCTURE_COLUMNS = (
    "table", "attribute_name", "attribute_definition", "required", "data_type",
    "format_unit_codes", "number", "conditional_on", "conditional_variables",
)  # fmt: skip
_VARIABLE_COLUMNS = ("attribute_name", "variable_name", "variable_definition")
_REQUIREMENTS = {"required", "encouraged", "optional", "conditional", "added automatically"}
_DATE_FORMATS = {"YYYY": "%Y", "YYYY-MM-DD": "%Y-%m-%d"}
_NUMERIC = frozenset(row.name for row in ROWS if row.numeric)

# Titles and one-line descriptions of the CCN tables (the dictionary has none).
_TABLES: dict[str, tuple[str, str]] = {
    "study_citations": ("CCN study citations", "One row per publication a study cites."),
    "methods": ("CCN methods", "One row per study method: coring, drying, ignition, dating."),
    "sites": ("CCN sites", "One row per study site: extent and site-level classes."),
    "cores": (
        "CCN sediment cores",
        "One row per sediment core: when and where it was taken, its elevation, and its "
        "salinity, vegetation, habitat and inundation classes.",
    ),
    "depthseries": (
        "CCN core depth series",
        "One row per depth interval of a core: depths, dry bulk density, organic matter and "
        "carbon fractions, and dating measurements.",
    ),
    "species": ("CCN species", "One row per species recorded at a site or core."),
    "impacts": ("CCN impacts", "One row per human impact recorded at a site or core."),
}

# Known physical constraints, as logicalTypeOptions, keyed by attribute name (numeric only).
# An exclusive bound is ODCS v3.0.2's flag on it: minimum 0 with exclusiveMinimum true.
_BOUNDS: dict[str, dict[str, int | bool]] = {
    "latitude": {"minimum": -90, "maximum": 90},
    "longitude": {"minimum": -180, "maximum": 180},
    "year": {"minimum": 1900, "maximum": 2030},
    "month": {"minimum": 1, "maximum": 12},
    "day": {"minimum": 1, "maximum": 31},
    "depth_min": {"minimum": 0},
    "dry_bulk_density": {"minimum": 0, "exclusiveMinimum": True},
    "fraction_carbon": {"minimum": 0, "maximum": 1},
    "fraction_organic_matter": {"minimum": 0, "maximum": 1},
}
# CCN "required" means the column must be in the submission (a missing column rejects the
# file), but the published studies leave required cells NA often (e.g. 11,645 depthseries
# rows without dry_bulk_density): an empty required cell is a warning, except for the
# columns that identify a row, without which it cannot be placed at all.
_IDENTITY = frozenset({"study_id", "core_id"})
# A future sampling year is suspicious, not impossible to explain: flag it, load the row.
_BOUND_SEVERITY: dict[str, dict[str, str]] = {"year": {"maximum": "warning"}}


@dataclass(frozen=True)
class _RowRule:
    """A physical constraint across columns, emitted when the table has all its columns."""

    id: str
    name: str
    columns: tuple[str, ...]
    implementation: str
    severity: str
    description: str


_ROW_RULES: tuple[_RowRule, ...] = (
    _RowRule(
        id="depth_order",
        name="Depth interval is ordered",
        columns=("depth_min", "depth_max"),
        implementation="depth_min <= depth_max",
        severity="fatal",
        description="depth_min (top of the interval) must not exceed depth_max (its bottom)",
    ),
)

# Cross-dataset references: a table's rows must name a row of another table of the same
# agency file (the dictionary's hierarchy: study -> site -> core -> depth interval).
# table -> (referenced table, key columns); emitted when both tables have the key columns.
_REFERENCES: dict[str, tuple[str, tuple[str, ...]]] = {
    "depthseries": ("cores", ("study_id", "core_id")),
}

# Uniqueness only where the real studies prove it: core_id is unique within each of the
# 101 *_cores.csv files (the identity is (study_id, core_id); core_id alone repeats across
# studies, so a delivery must not mix studies that reuse core ids).
_UNIQUE: dict[str, frozenset[str]] = {"cores": frozenset({"core_id"})}


@dataclass(frozen=True)
class Attribute:
    """One row of the CCN data dictionary, with "NA" read as absent."""

    table: str
    name: str
    definition: str
    requirement: str
    data_type: str
    format_unit_codes: str | None
    number: str | None
    conditional_on: tuple[str, ...]
    conditional_variables: tuple[str, ...]


# --------------------------------------------------------------------------------------------
# Reading the dictionary
# --------------------------------------------------------------------------------------------


def read_text(path: Path) -> str:
    """Decode a CCN CSV: UTF-8 (BOM dropped) if it is, else cp1252 (the CCN's Excel export)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"CCN dictionary file {path} cannot be read: {exc}") from exc
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise ConfigurationError(f"{path} is neither UTF-8 nor cp1252 text; re-export it as UTF-8")


def read_csv(path: Path, columns: Sequence[str]) -> pl.DataFrame:
    """All cells as text ("NA" and empty as null), after checking the expected columns."""
    try:
        frame = pl.read_csv(
            io.StringIO(read_text(path)), infer_schema=False, null_values=NULL_VALUES
        )
    except pl.exceptions.PolarsError as exc:
        raise ConfigurationError(f"{path} is not a readable CSV: {exc}") from exc
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ConfigurationError(f"{path} lacks the column(s) {missing}; is it the CCN file?")
    return frame.with_columns(pl.col(c).str.strip_chars() for c in columns)


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in (value or "").split(";") if p.strip())


def read_structure(source_dir: Path) -> list[Attribute]:
    """Every dictionary row, validated so a new spelling fails here rather than silently."""
    path = source_dir / STRUCTURE_FILE
    attributes: list[Attribute] = []
    for row in read_csv(path, _STRUCTURE_COLUMNS).iter_rows(named=True):
        where = f"{path}: {row['table']}.{row['attribute_name']}"
        requirement = (row["required"] or "").lower()
        if requirement not in _REQUIREMENTS:
            raise ConfigurationError(
                f"{where}: required {row['required']!r} is not one of {sorted(_REQUIREMENTS)}"
            )
        attributes.append(
            Attribute(
                table=row["table"] or "",
                name=check_column(row["attribute_name"], f"{where}: attribute"),
                definition=row["attribute_definition"] or "",
                requirement=requirement,
                data_type=(row["data_type"] or "").lower(),
                format_unit_codes=row["format_unit_codes"],
                number=(row["number"] or "").lower() or None,
                conditional_on=_split(row["conditional_on"]),
                conditional_variables=_split(row["conditional_variables"]),
            )
        )
    return attributes


def read_vocabularies(source_dir: Path) -> dict[str, list[EnumValue]]:
    """Allowed values per factor attribute, in the order the CCN lists them."""
    path = source_dir / VARIABLES_FILE
    vocabularies: dict[str, list[EnumValue]] = {}
    for row in read_csv(path, _VARIABLE_COLUMNS).iter_rows(named=True):
        if row["attribute_name"] is None or row["variable_name"] is None:
            raise ConfigurationError(f"{path}: a row lacks attribute_name or variable_name")
        values = vocabularies.setdefault(row["attribute_name"], [])
        if any(v.value == row["variable_name"] for v in values):
            continue
        values.append(EnumValue(value=row["variable_name"], description=row["variable_definition"]))
    return vocabularies


def parse_codes(codes: str | None) -> list[EnumValue]:
    """Parse ``value = definition; value = definition`` (a ';' inside a definition is kept)."""
    pairs: list[tuple[str, str]] = []
    for chunk in (codes or "").split(";"):
        value, sep, definition = chunk.partition(" = ")
        if sep and value.strip():
            pairs.append((value.strip(), definition.strip()))
        elif pairs and chunk.strip():
            pairs[-1] = (pairs[-1][0], f"{pairs[-1][1]}; {chunk.strip()}")
    return [EnumValue(value=v, description=d or None) for v, d in pairs]


# --------------------------------------------------------------------------------------------
# Mapping one attribute
# --------------------------------------------------------------------------------------------


def logical_type(attr: Attribute) -> str:
    """The Flux logicalType of a dictionary data_type (see the module docstring)."""
    match attr.data_type:
        case "numeric":
            if attr.number not in (None, "integer", "real"):
                raise ConfigurationError(
                    f"{attr.table}.{attr.name}: number {attr.number!r} is not integer or real"
                )
            return "integer" if attr.number == "integer" else "number"
        case "character" | "factor":
            return "string"
        case "date":
            return "date" if (attr.format_unit_codes or "") in _DATE_FORMATS else "string"
    raise ConfigurationError(
        f"{attr.table}.{attr.name}: data_type {attr.data_type!r} is not character, numeric, "
        "factor or Date"
    )


def allowed_values(attr: Attribute, vocabularies: dict[str, list[EnumValue]]) -> list[EnumValue]:
    """A factor's vocabulary; a factor without one is a dictionary defect, not a free text."""
    values = vocabularies.get(attr.name) or parse_codes(attr.format_unit_codes)
    if not values:
        raise ConfigurationError(
            f"{attr.table}.{attr.name} is a factor without allowed values in "
            f"{VARIABLES_FILE} or format_unit_codes"
        )
    return [v.model_copy() for v in values]


def type_options(attr: Attribute, logical: str) -> dict[str, Any] | None:
    """Date format and known physical bounds, as ODCS logicalTypeOptions."""
    options: dict[str, Any] = {}
    if logical == "date":
        options["format"] = _DATE_FORMATS[attr.format_unit_codes or ""]
    if logical in _NUMERIC:
        options.update(_BOUNDS.get(attr.name, {}))
    return options or None


def custom_properties(attr: Attribute, logical: str) -> list[CustomProperty] | None:
    """The unit (numeric attributes only) and per-rule severity overrides."""
    props: list[CustomProperty] = []
    if logical in _NUMERIC and attr.format_unit_codes:
        props.append(CustomProperty(property="unit", value=attr.format_unit_codes))
    severity = dict(_BOUND_SEVERITY.get(attr.name, {})) if logical in _NUMERIC else {}
    if attr.requirement == "required" and attr.name not in _IDENTITY:
        severity["required"] = "warning"
    if severity:
        props.append(CustomProperty(property="severity", value=severity))
    return props or None


@dataclass(frozen=True)
class Condition:
    """When an attribute is expected: ``exempt`` is SQL true for rows that need no value."""

    exempt: str
    when: str  # the same condition in words, for the rule message


def condition(attr: Attribute, types: dict[str, str]) -> Condition | None:
    """The attribute's condition within its table; None when it cannot be said cleanly."""
    columns = [c for c in attr.conditional_on if c in types and c != attr.name]
    if not columns:
        return None
    if not attr.conditional_variables:
        if len(columns) == 1:
            return Condition(f"{columns[0]} IS NULL", f"{columns[0]} is given")
        exempt = " AND ".join(f"{c} IS NULL" for c in columns)
        return Condition(f"({exempt})", f"any of {', '.join(columns)} is given")
    if len(columns) != 1 or types[columns[0]] != "string":
        return None
    column = columns[0]
    listed = ", ".join(literal(v) for v in attr.conditional_variables)
    values = " or ".join(repr(v) for v in attr.conditional_variables)
    return Condition(f"{column} IS NULL OR {column} NOT IN ({listed})", f"{column} is {values}")


def completeness_rule(attr: Attribute, types: dict[str, str]) -> DataQuality | None:
    """The warning for encouraged and conditional attributes (see the module docstring)."""
    if attr.requirement not in {"encouraged", "conditional"}:
        return None
    cond = condition(attr, types)
    if cond is None and attr.requirement == "conditional":
        return None
    common: dict[str, Any] = {
        "id": f"{attr.name}.{attr.requirement}",
        "severity": "warning",
        "dimension": "completeness",
    }
    if cond is None:
        return DataQuality(
            **common,
            type="library",
            rule="nullValues",
            description=f"The CCN data dictionary encourages {attr.name}: give it when known",
        )
    verb = "encourages" if attr.requirement == "encouraged" else "asks for"
    return DataQuality(
        **common,
        type="custom",
        engine="flux",
        implementation=f"{cond.exempt} OR {attr.name} IS NOT NULL",
        description=f"The CCN data dictionary {verb} {attr.name} when {cond.when}",
    )


def schema_property(
    attr: Attribute, vocabularies: dict[str, list[EnumValue]], types: dict[str, str]
) -> SchemaProperty:
    """One dictionary attribute as an ODCS property (see the module docstring)."""
    logical = types[attr.name]
    rule = completeness_rule(attr, types)
    return SchemaProperty(
        name=attr.name,
        logicalType=logical,
        description=" ".join(attr.definition.split()) or None,
        required=True if attr.requirement == "required" else None,
        unique=True if attr.name in _UNIQUE.get(attr.table, frozenset()) else None,
        enum=allowed_values(attr, vocabularies) if attr.data_type == "factor" else None,
        logicalTypeOptions=type_options(attr, logical),
        customProperties=custom_properties(attr, logical),
        quality=[rule] if rule else None,
    )


def row_rules(columns: set[str]) -> list[DataQuality] | None:
    """The known cross-column constraints whose columns the table has."""
    rules = [
        DataQuality(
            id=r.id,
            name=r.name,
            type="custom",
            engine="flux",
            implementation=r.implementation,
            severity=r.severity,
            dimension="accuracy",
            description=r.description,
        )
        for r in _ROW_RULES
        if set(r.columns) <= columns
    ]
    return rules or None


def references(table: str, columns: set[str]) -> list[Relationship] | None:
    """The table's foreign key to its parent table, as an ODCS relationship."""
    if table not in _REFERENCES:
        return None
    parent, key = _REFERENCES[table]
    if not set(key) <= columns:
        return None
    return [
        Relationship.model_validate(  # "from" is a keyword: only its alias populates it
            {
                "id": f"{dataset_id(table)}.{parent.rstrip('s')}_exists",
                "type": "foreignKey",
                "from": list(key),
                "to": [f"{dataset_id(parent)}.{k}" for k in key],
                "customProperties": [
                    CustomProperty(property="severity", value="fatal"),
                    CustomProperty(property="category", value="existence"),
                    CustomProperty(
                        property="message",
                        value=f"{', '.join(key)} does not name a {parent} row the study delivered "
                        f"(deliver its {parent} first, or correct the ids)",
                    ),
                ],
            }
        )
    ]


# --------------------------------------------------------------------------------------------
# Building the contracts
# --------------------------------------------------------------------------------------------


def dataset_id(table: str) -> str:
    """The Flux dataset id of a CCN table (it names folders and assets, so it must be a slug)."""
    return check_slug(f"ccn_{table}", f"dataset id of CCN table {table!r}")


def contract(
    table: str, attributes: list[Attribute], vocabularies: dict[str, list[EnumValue]]
) -> OpenDataContractStandard:
    """The ODCS contract of one CCN table."""
    names = [a.name for a in attributes]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ConfigurationError(f"{STRUCTURE_FILE}: table {table} repeats attribute(s) {dupes}")
    types = {a.name: logical_type(a) for a in attributes}
    title, description = _TABLES.get(table, (f"CCN {table}", f"The CCN {table} table."))
    table_schema = SchemaObject(
        name=dataset_id(table),
        physicalType="table",
        businessName=title,
        description=description,
        properties=[schema_property(a, vocabularies, types) for a in attributes],
        quality=row_rules(set(names)),
        relationships=references(table, set(names)),
    )
    return OpenDataContractStandard(
        apiVersion=API_VERSION,
        kind="DataContract",
        id=f"ccn-{table.replace('_', '-')}-v1",
        name=dataset_id(table),
        version=VERSION,
        status="active",
        domain=DOMAIN,
        description=Description(
            purpose=f"{description} Coastal Carbon Network (CCN) submissions, checked "
            "against the CCN data dictionary.",
            usage="Coastal blue carbon research; rules generated from the CCN data dictionary.",
        ),
        customProperties=[
            CustomProperty(property="effectiveFrom", value=EFFECTIVE_FROM),
            CustomProperty(property="nullValues", value=list(NULL_VALUES)),
        ],
        schema=[table_schema],
    )


def _digest(path: Path) -> str:
    return sha256_file(path)[:16]


def header(source_dir: Path) -> str:
    """The do-not-edit banner, naming the sources (with digests) and the command."""
    sources = "".join(
        f"#   {name} (sha256 {_digest(source_dir / name)}...)\n"
        for name in (STRUCTURE_FILE, VARIABLES_FILE)
    )
    return (
        "# GENERATED FILE: DO NOT EDIT BY HAND (a test checks it matches the importer).\n"
        "# Generated by flux_pipelines/contracts/importers/ccn.py from the Coastal Carbon\n"
        "# Network (CCN) data dictionary:\n"
        f"{sources}"
        "# Regenerate with:\n"
        f"#   {COMMAND}\n"
    )


def to_yaml(document: OpenDataContractStandard) -> str:
    data = document.model_dump(by_alias=True, exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def import_ccn_dictionary(source_dir: Path, tables: list[str]) -> dict[str, str]:
    """ODCS YAML text (with its generated-file header) per dataset id, for ``tables``."""
    attributes = read_structure(source_dir)
    vocabularies = read_vocabularies(source_dir)
    known = list(dict.fromkeys(a.table for a in attributes))
    unknown = [t for t in tables if t not in known]
    if unknown:
        raise ConfigurationError(
            f"{source_dir / STRUCTURE_FILE} has no table(s) {unknown}; known: {known}"
        )
    banner = header(source_dir)
    return {
        dataset_id(table): banner
        + to_yaml(contract(table, [a for a in attributes if a.table == table], vocabularies))
        for table in tables
    }


def known_tables(source_dir: Path) -> list[str]:
    """The tables the dictionary defines, in its order."""
    return list(dict.fromkeys(a.table for a in read_structure(source_dir)))


def write_contracts(documents: dict[str, str], out_dir: Path) -> list[Path]:
    """Write ``<out>/<dataset>/<version>.odcs.yaml`` for each document."""
    written: list[Path] = []
    for dataset, text in documents.items():
        path = out_dir / dataset / f"{VERSION}.odcs.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: generate the CCN contracts into the contracts folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--source", type=Path, required=True, help="folder of the CCN CSVs")
    parser.add_argument("--out", type=Path, required=True, help="contracts/datasets folder")
    parser.add_argument(
        "--tables",
        nargs="+",
        default=list(DEFAULT_TABLES),
        help="CCN tables to generate, or 'all' (default: cores depthseries)",
    )
    args = parser.parse_args(argv)
    try:
        tables = known_tables(args.source) if args.tables == ["all"] else list(args.tables)
        written = write_contracts(import_ccn_dictionary(args.source, tables), args.out)
    except ConfigurationError as exc:
        sys.exit(f"error: {exc}")
    for path in written:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
