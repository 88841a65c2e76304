"""The contract engine: ODCS loading, slugs, the agency registry, the row validator and the
pandera / JSON Schema exports, each tested on small contracts written to tmp_path."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any

import jsonschema
import pandera.errors
import polars as pl
import pytest
import yaml

from flux_pipelines.contracts.jsonschema_export import json_schema
from flux_pipelines.contracts.loader import load_contract
from flux_pipelines.contracts.model import Contract
from flux_pipelines.contracts.pandera_schema import pandera_schema
from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.contracts.validator import (
    FILE,
    MAX_CELL_BYTES,
    ROW,
    TRUNCATION_MARKER,
    RowValidator,
    truncate,
)
from flux_pipelines.errors import ConfigurationError, ContractError
from flux_pipelines.slugs import check_slug, normalise_header
from flux_pipelines_tests.conftest import contract_doc, write_contract

# --- loader: every rule kind ------------------------------------------------------------------

ALL_KINDS_PROPERTIES: list[dict[str, Any]] = [
    {
        "name": "id",
        "logicalType": "integer",
        "required": True,
        "primaryKey": True,
        "logicalTypeOptions": {"minimum": 1},
    },
    {
        "name": "code",
        "logicalType": "string",
        "required": True,
        "unique": True,
        "logicalTypeOptions": {"pattern": "^[A-Z]+$", "minLength": 2, "maxLength": 4},
    },
    {
        "name": "kind",
        "logicalType": "string",
        "enum": [{"value": "a", "description": "the a kind"}, {"value": "b"}],
        "customProperties": [
            {"property": "severity", "value": {"allowed_values": "warning"}},
            {"property": "caseInsensitive", "value": True},
        ],
    },
    {
        "name": "price",
        "logicalType": "number",
        "logicalTypeOptions": {"exclusiveMinimum": 0, "maximum": 1000},
    },
    {
        "name": "ratio",
        "logicalType": "number",
        "logicalTypeOptions": {
            "minimum": 0,
            "exclusiveMinimum": True,
            "maximum": 1,
            "exclusiveMaximum": True,
        },
    },
    {"name": "active", "logicalType": "boolean"},
    {"name": "day", "logicalType": "date", "logicalTypeOptions": {"format": "%d/%m/%Y"}},
    {"name": "seen_at", "logicalType": "date", "physicalType": "timestamp"},
    {
        "name": "full_name",
        "logicalType": "string",
        "customProperties": [{"property": "sourceNames", "value": ["Name (full)", "nm"]}],
        "quality": [
            {"id": "name_present", "type": "library", "rule": "nullValues", "severity": "warn"},
            {"id": "name_once", "type": "library", "rule": "duplicateValues"},
        ],
    },
]
ALL_KINDS_QUALITY = [
    {
        "id": "cheap_and_rare",
        "type": "custom",
        "engine": "flux",
        "implementation": "price * ratio < 500",
        "severity": "warning",
        "dimension": "completeness",
        "description": "price times ratio stays under 500",
    }
]

# (kind, column, severity, expected) per rule id, written from contracts/README.md.
EXPECTED_RULES: dict[str, tuple[str, str | None, str, str]] = {
    "id.required": ("required", "id", "fatal", "a value"),
    "id.type": ("type", "id", "fatal", "a whole number"),
    "id.minimum": ("minimum", "id", "fatal", ">= 1"),
    "id.unique": ("unique", "id", "fatal", "a value not repeated"),
    "code.required": ("required", "code", "fatal", "a value"),
    "code.pattern": ("pattern", "code", "fatal", "matches ^[A-Z]+$"),
    "code.min_length": ("min_length", "code", "fatal", "at least 2 characters"),
    "code.max_length": ("max_length", "code", "fatal", "at most 4 characters"),
    "code.unique": ("unique", "code", "fatal", "a value not repeated"),
    "kind.allowed_values": ("allowed_values", "kind", "warning", "one of: a, b"),
    "price.type": ("type", "price", "fatal", "a number"),
    "price.minimum": ("minimum", "price", "fatal", "> 0"),
    "price.maximum": ("maximum", "price", "fatal", "<= 1000"),
    "ratio.type": ("type", "ratio", "fatal", "a number"),
    "ratio.minimum": ("minimum", "ratio", "fatal", "> 0"),
    "ratio.maximum": ("maximum", "ratio", "fatal", "< 1"),
    "active.type": ("type", "active", "fatal", "true or false"),
    "day.type": ("type", "day", "fatal", "a date (%d/%m/%Y)"),
    "seen_at.type": ("type", "seen_at", "fatal", "a date and time"),
    "name_present": ("required", "full_name", "warning", "a value"),
    "name_once": ("unique", "full_name", "fatal", "a value not repeated"),
    "cheap_and_rare": ("expression", None, "warning", "price * ratio < 500"),
}


@pytest.fixture
def all_kinds(tmp_path: Path) -> Contract:
    doc = contract_doc(ALL_KINDS_PROPERTIES, quality=ALL_KINDS_QUALITY)
    return load_contract(write_contract(tmp_path, doc))


def test_every_rule_kind_compiles_with_id_severity_and_expected(all_kinds: Contract) -> None:
    got = {r.id: (r.kind, r.column, r.severity, r.expected) for r in all_kinds.rules}
    assert got == EXPECTED_RULES


def test_rule_details(all_kinds: Contract) -> None:
    expr = all_kinds.rule("cheap_and_rare")
    assert expr.columns == ("price", "ratio")
    assert expr.expression == "price * ratio < 500"
    assert expr.category == "completeness"
    assert expr.message == "price times ratio stays under 500"
    assert all_kinds.rule("name_present").category == "completeness"
    assert all_kinds.rule("id.required").category == "existence"
    assert all_kinds.identifier == ["id"]
    assert all_kinds.required_columns == ["id", "code"]


def test_column_options(all_kinds: Contract) -> None:
    price, ratio = all_kinds.column("price"), all_kinds.column("ratio")
    # exclusiveMinimum as a number (JSON Schema 2020) and as a flag on minimum (draft 4)
    assert (price.minimum, price.exclusive_minimum) == (0.0, True)
    assert (price.maximum, price.exclusive_maximum) == (1000.0, False)
    assert (ratio.minimum, ratio.exclusive_minimum) == (0.0, True)
    assert (ratio.maximum, ratio.exclusive_maximum) == (1.0, True)
    assert all_kinds.column("full_name").source_names == ("Name (full)", "nm")
    assert all_kinds.column("kind").case_insensitive_values is True
    assert all_kinds.column("day").date_format == "%d/%m/%Y"
    assert [v.value for v in all_kinds.column("kind").allowed_values] == ["a", "b"]


def test_severity_override_and_spellings(tmp_path: Path) -> None:
    props = [
        {
            "name": "n",
            "logicalType": "integer",
            "required": True,
            "logicalTypeOptions": {"minimum": 0, "maximum": 9},
            "customProperties": [
                {"property": "severity", "value": {"required": "warning", "maximum": "info"}}
            ],
        }
    ]
    quality = [
        {
            "id": "n_pos",
            "type": "custom",
            "engine": "flux",
            "implementation": "n > 0",
            "severity": "error",
        },
    ]
    contract = load_contract(write_contract(tmp_path, contract_doc(props, quality=quality)))
    severities = {r.id: r.severity for r in contract.rules}
    assert severities == {
        "n.required": "warning",
        "n.type": "fatal",
        "n.minimum": "fatal",
        "n.maximum": "warning",
        "n_pos": "fatal",
    }


def test_top_level_custom_properties(tmp_path: Path) -> None:
    doc = contract_doc(
        [{"name": "a", "logicalType": "string"}],
        custom=[
            {"property": "effectiveFrom", "value": "2024-03-01"},
            {"property": "nullValues", "value": ["", "-", "n/a"]},
        ],
    )
    contract = load_contract(write_contract(tmp_path, doc))
    assert contract.effective_from == dt.date(2024, 3, 1)
    assert contract.null_values == ("", "-", "n/a")
    assert (contract.dataset, contract.version, contract.id) == ("items", "1.0.0", "items-v1")


# --- loader: every way a contract can be wrong ------------------------------------------------

BASE_PROPS: list[dict[str, Any]] = [
    {"name": "id", "logicalType": "integer", "required": True},
    {"name": "b", "logicalType": "number"},
]


def _expr_rule(expression: str, rule_id: str | None = "r1") -> list[dict[str, Any]]:
    rule = {"type": "custom", "engine": "flux", "implementation": expression}
    if rule_id:
        rule["id"] = rule_id
    return [rule]


def _set_prop(index: int, **changes: Any) -> Any:
    def edit(doc: dict[str, Any]) -> None:
        doc["schema"][0]["properties"][index].update(changes)

    return edit


BROKEN: dict[str, tuple[Any, str]] = {
    "missing kind": (lambda d: d.pop("kind"), "kind must be DataContract"),
    "wrong kind": (lambda d: d.update(kind="DataProduct"), "kind must be DataContract"),
    "unknown ODCS field": (lambda d: d.update(colour="red"), "not valid ODCS"),
    "missing version": (lambda d: d.pop("version"), "version"),
    "unknown logicalType": (_set_prop(0, logicalType="money"), "logicalType 'money'"),
    "bad regex": (
        _set_prop(1, logicalType="string", logicalTypeOptions={"pattern": "([a-z"}),
        "pattern '([a-z' is invalid",
    ),
    "unknown logicalTypeOption": (
        _set_prop(1, logicalTypeOptions={"precision": 2}),
        "unsupported logicalTypeOptions",
    ),
    "non-numeric minimum": (_set_prop(1, logicalTypeOptions={"minimum": "abc"}), "abc"),
    "unknown column in expression": (
        lambda d: d["schema"][0].update(quality=_expr_rule("id < zz")),
        "unknown columns ['zz']",
    ),
    "unparsable expression": (
        lambda d: d["schema"][0].update(quality=_expr_rule("id <<>> (")),
        "cannot parse",
    ),
    "empty expression": (
        lambda d: d["schema"][0].update(quality=_expr_rule("")),
        "is empty",
    ),
    "quality rule without id": (
        lambda d: d["schema"][0].update(quality=_expr_rule("id > 0", rule_id=None)),
        "needs a stable id",
    ),
    "unsupported quality rule": (
        lambda d: d["schema"][0].update(quality=[{"id": "q", "type": "text"}]),
        "unsupported quality rule",
    ),
    "cross-dataset sql without this": (
        lambda d: d["schema"][0].update(quality=[{"id": "q", "type": "sql", "query": "x"}]),
        "must read {{this}}",
    ),
    "relationship without a target dataset": (
        lambda d: d["schema"][0].update(
            relationships=[{"id": "r", "type": "foreignKey", "from": ["id"], "to": ["b"]}]
        ),
        "to must read <dataset>.<column>",
    ),
    "sum reconciliation without a column": (
        lambda d: d["schema"][0].update(
            quality=[
                {
                    "id": "s",
                    "type": "custom",
                    "engine": "flux",
                    "rule": "sumReconciliation",
                    "arguments": {"key": ["id"], "otherDataset": "other"},
                }
            ]
        ),
        "sumReconciliation needs arguments",
    ),
    "sum reconciliation implementation without a column": (
        lambda d: d["schema"][0].update(
            quality=[
                {
                    "id": "s",
                    "type": "custom",
                    "engine": "flux",
                    "implementation": {
                        "rule": "sumReconciliation",
                        "arguments": {"key": ["id"], "otherDataset": "other"},
                    },
                }
            ]
        ),
        "sumReconciliation needs arguments",
    ),
    "implementation mapping that is no sum reconciliation": (
        lambda d: d["schema"][0].update(
            quality=[
                {
                    "id": "s",
                    "type": "custom",
                    "engine": "flux",
                    "implementation": {"rule": "sumOfSquares", "arguments": {}},
                }
            ]
        ),
        "an implementation mapping reads {rule: sumReconciliation",
    ),
    # spellings ODCS v3.0.2 lacks: the error names the field and the spelling to write
    "logicalType timestamp": (
        _set_prop(1, logicalType="timestamp"),
        "column b: logicalType 'timestamp' is not an ODCS v3.0.2 logical type; write "
        "logicalType: date with physicalType: timestamp",
    ),
    "library metric without rule": (
        _set_prop(1, quality=[{"id": "q", "type": "library", "metric": "nullValues"}]),
        "quality rule q: metric 'nullValues' is the ODCS v3.1 spelling; ODCS v3.0.2 names a "
        "library check with rule: write rule: nullValues",
    ),
    "dimension existence": (
        lambda d: d["schema"][0].update(
            quality=[{**_expr_rule("id > 0")[0], "dimension": "existence"}]
        ),
        "quality rule r1: dimension 'existence' is not an ODCS dimension; give Flux's category "
        "as customProperties: [{property: category, value: existence}]",
    ),
    "dimension outside ODCS": (
        lambda d: d["schema"][0].update(
            quality=[{**_expr_rule("id > 0")[0], "dimension": "validity"}]
        ),
        "dimension 'validity' is not an ODCS dimension; use one of ['accuracy'",
    ),
    "unknown category": (
        lambda d: d["schema"][0].update(
            quality=[
                {
                    **_expr_rule("id > 0")[0],
                    "customProperties": [{"property": "category", "value": "validity"}],
                }
            ]
        ),
        "customProperty category 'validity' is not one of",
    ),
    "exclusiveMinimum flag without minimum": (
        _set_prop(1, logicalTypeOptions={"exclusiveMinimum": True}),
        "column b: logicalTypeOptions exclusiveMinimum: true needs minimum",
    ),
    "enum description cut at a comma": (
        _set_prop(
            1,
            logicalType="string",
            enum=[{"value": "SBA", "description": "Small business set-aside", "total": None}],
        ),
        "column b: enum[0] (value 'SBA') has keys ODCS does not define ['total']: in a "
        "{value: ..., description: ...} flow mapping a description is cut at its first ', '; "
        'quote the description: description: "Small business set-aside, total"',
    ),
    "duplicate column": (
        lambda d: d["schema"][0]["properties"].append({"name": "b", "logicalType": "string"}),
        "duplicate column names: ['b']",
    ),
    "duplicate rule id": (
        lambda d: d["schema"][0].update(quality=_expr_rule("id > 0", rule_id="id.required")),
        "duplicate rule ids: ['id.required']",
    ),
    "bad severity": (
        lambda d: d["schema"][0].update(
            quality=[{**_expr_rule("id > 0")[0], "severity": "catastrophic"}]
        ),
        "severity 'catastrophic'",
    ),
    "severity for an unknown rule kind": (
        _set_prop(1, customProperties=[{"property": "severity", "value": {"minimun": "warning"}}]),
        "minimun",
    ),
    "bad column name": (_set_prop(1, name="Mass (g)"), "not a valid column name"),
    "dataset name with a space": (lambda d: d.update(name="Bad Name"), "'Bad Name'"),
    "dataset name with a path": (lambda d: d.update(name="../x"), "'../x'"),
    "bad effectiveFrom": (
        lambda d: d.update(customProperties=[{"property": "effectiveFrom", "value": "2024-13-01"}]),
        "effectiveFrom",
    ),
    "two schema objects": (
        lambda d: d["schema"].append(copy.deepcopy(d["schema"][0])),
        "exactly one schema",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_broken_contract_is_a_contract_error(tmp_path: Path, case: str) -> None:
    edit, message = BROKEN[case]
    doc = contract_doc(copy.deepcopy(BASE_PROPS))
    edit(doc)
    path = tmp_path / "c.odcs.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    with pytest.raises(ContractError) as info:
        load_contract(path)
    assert message in str(info.value)
    assert info.value.path == str(path)


def test_base_of_broken_cases_is_valid(tmp_path: Path) -> None:
    """The broken cases above each differ from this valid contract by one edit."""
    contract = load_contract(write_contract(tmp_path, contract_doc(copy.deepcopy(BASE_PROPS))))
    assert contract.column_names == ["id", "b"]


SUM_ARGUMENTS = {"key": ["id"], "column": "b", "otherDataset": "other", "comparison": "<="}


def test_sum_reconciliation_in_the_odcs_spelling(tmp_path: Path) -> None:
    """``implementation: {rule: sumReconciliation, arguments}`` (what ODCS v3.0.2 asks of a
    custom rule) compiles to the rule the earlier spelling, rule and arguments beside
    ``engine``, gave."""
    base = {"id": "s", "type": "custom", "engine": "flux", "severity": "warning"}
    spellings = {
        "odcs": {
            **base,
            "implementation": {"rule": "sumReconciliation", "arguments": SUM_ARGUMENTS},
        },
        "earlier": {**base, "rule": "sumReconciliation", "arguments": SUM_ARGUMENTS},
    }
    rules = {
        name: load_contract(
            write_contract(tmp_path / name, contract_doc(copy.deepcopy(BASE_PROPS), quality=[q]))
        ).cross_rules
        for name, q in spellings.items()
    }
    assert rules["odcs"] == rules["earlier"]
    assert [(r.id, r.kind, r.datasets, r.severity) for r in rules["odcs"]] == [
        ("s", "sum", ("other",), "warning")
    ]


def test_category_custom_property(tmp_path: Path) -> None:
    """Flux's category is a customProperty (ODCS dimensions have no ``existence``); without
    it each kind keeps its default, and an ODCS dimension Flux shares still counts."""
    existence = [{"property": "category", "value": "existence"}]
    query = "SELECT * FROM {{this}} t WHERE t.id < 0"
    props = copy.deepcopy(BASE_PROPS)
    props[1]["quality"] = [
        {"id": "b_present", "type": "library", "rule": "nullValues", "customProperties": existence}
    ]
    quality = [
        {"id": "q_sql", "type": "sql", "engine": "flux", "query": query},
        {"id": "q_sql_exists", "type": "sql", "engine": "flux", "query": query,
         "customProperties": existence},
        {**_expr_rule("id > 0", "q_expr")[0], "dimension": "completeness"},
        {**_expr_rule("id > 1", "q_expr_exists")[0], "dimension": "consistency",
         "customProperties": existence},
    ]  # fmt: skip
    contract = load_contract(write_contract(tmp_path, contract_doc(props, quality=quality)))
    categories = {r.id: r.category for r in (*contract.rules, *contract.cross_rules)}
    assert {k: v for k, v in categories.items() if k.startswith(("q_", "b_"))} == {
        "b_present": "existence",
        "q_sql": "accuracy",
        "q_sql_exists": "existence",
        "q_expr": "completeness",
        "q_expr_exists": "existence",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [("a: [b\n  c: {", "cannot be read as YAML"), ("- a\n- b\n", "not a YAML mapping")],
    ids=["not YAML", "a list"],
)
def test_not_yaml_is_a_contract_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.odcs.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ContractError, match=message):
        load_contract(path)


# --- slugs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("\ufeffMass (g) ", "mass_g"),
        (" mass_g ", "mass_g"),
        ("Full Name", "full_name"),
        ("GeoLocation", "geolocation"),
        ("a--b__c", "a_b_c"),
        ("_row_number", "row_number"),
        ("%", ""),
    ],
)
def test_normalise_header(header: str, expected: str) -> None:
    assert normalise_header(header) == expected


@pytest.mark.parametrize("good", ["meteorites", "nasa-jpl", "a1_b2", "x", "a" * 48])
def test_check_slug_accepts(good: str) -> None:
    assert check_slug(good, "id") == good


@pytest.mark.parametrize(
    "bad",
    ["Bad Name", "../x", "", "a--b", "1abc", "-a", "a-", "Nasa", "a b", "a/b", "a" * 49, None, 7],
)
def test_check_slug_rejects(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="is not a valid id"):
        check_slug(bad, "dataset id")


# --- agency registry ---------------------------------------------------------------------------


def _registry_root(tmp_path: Path, agencies: list[dict[str, Any]]) -> Path:
    props = [{"name": "a", "logicalType": "string"}]
    for version, start in (("1.0.0", "2020-01-01"), ("2.0.0", "2024-01-01")):
        doc = contract_doc(
            props, version=version, custom=[{"property": "effectiveFrom", "value": start}]
        )
        doc["id"] = f"items-v{version[0]}"
        write_contract(tmp_path, doc)
    (tmp_path / "agencies.yaml").write_text(yaml.safe_dump({"agencies": agencies}))
    return tmp_path


AGENCY = {"id": "agency-a", "name": "Agency A", "datasets": ["items"]}


def test_registry_picks_the_version_in_force(tmp_path: Path) -> None:
    registry = load_registry(_registry_root(tmp_path, [AGENCY]))
    assert [c.version for c in registry.versions("items")] == ["1.0.0", "2.0.0"]
    assert registry.contract_for("items", dt.date(2020, 1, 1)).version == "1.0.0"
    assert registry.contract_for("items", dt.date(2023, 12, 31)).version == "1.0.0"
    assert registry.contract_for("items", dt.date(2024, 1, 1)).version == "2.0.0"
    assert registry.contract_for("items", dt.date(2030, 6, 1)).version == "2.0.0"
    assert registry.agency("agency-a").key == "agency_a"
    with pytest.raises(ConfigurationError, match="no items contract is in force on 2019-12-31"):
        registry.contract_for("items", dt.date(2019, 12, 31))


def test_registry_rejects_bad_agency_slug(tmp_path: Path) -> None:
    root = _registry_root(tmp_path, [{**AGENCY, "id": "Agency A"}])
    with pytest.raises(ConfigurationError, match="agency id 'Agency A' is not a valid id"):
        load_registry(root)


def test_registry_says_an_agency_domain_is_no_longer_read(tmp_path: Path) -> None:
    root = _registry_root(tmp_path, [{**AGENCY, "domain": "collections"}])
    with pytest.raises(ConfigurationError, match="'domain', which is no longer read"):
        load_registry(root)


def test_registry_rejects_agency_with_missing_dataset(tmp_path: Path) -> None:
    root = _registry_root(tmp_path, [{**AGENCY, "datasets": ["items", "ghosts"]}])
    with pytest.raises(ConfigurationError, match="delivers 'ghosts' but there is no contract"):
        load_registry(root)


def test_registry_rejects_contract_outside_its_folder(tmp_path: Path) -> None:
    root = _registry_root(tmp_path, [AGENCY])
    moved = root / "datasets" / "other"
    moved.mkdir()
    (root / "datasets" / "items" / "2.0.0.odcs.yaml").rename(moved / "2.0.0.odcs.yaml")
    with pytest.raises(ConfigurationError, match="must match its folder 'other'"):
        load_registry(root)


# --- validator ---------------------------------------------------------------------------------

VALIDATOR_PROPS: list[dict[str, Any]] = [
    {
        "name": "id",
        "logicalType": "integer",
        "required": True,
        "logicalTypeOptions": {"minimum": 1},
    },
    {"name": "code", "logicalType": "string", "logicalTypeOptions": {"pattern": "^[A-Z]+$"}},
    {
        "name": "label",
        "logicalType": "string",
        "logicalTypeOptions": {"minLength": 2, "maxLength": 5},
    },
    {"name": "kind", "logicalType": "string", "enum": [{"value": "a"}, {"value": "b"}]},
    {
        "name": "score",
        "logicalType": "number",
        "logicalTypeOptions": {"exclusiveMinimum": 0, "maximum": 10},
    },
    {"name": "lo", "logicalType": "number"},
    {"name": "hi", "logicalType": "number"},
    {"name": "flag", "logicalType": "boolean"},
    {"name": "day", "logicalType": "date", "logicalTypeOptions": {"format": "%d/%m/%Y"}},
    {
        "name": "note",
        "logicalType": "string",
        "logicalTypeOptions": {"maxLength": 3},
        "customProperties": [{"property": "severity", "value": {"max_length": "warning"}}],
    },
]
VALIDATOR_QUALITY = _expr_rule("lo <= hi", rule_id="lo_le_hi")
GOOD_ROW = {
    "id": "1",
    "code": "ABC",
    "label": "abc",
    "kind": "a",
    "score": "5",
    "lo": "1",
    "hi": "2",
    "flag": "yes",
    "day": "31/12/2020",
    "note": "ok",
}
# One row per case: the changes from GOOD_ROW and the rule ids it must break.
CASES: list[tuple[dict[str, str], set[str]]] = [
    ({}, set()),
    ({"id": ""}, {"id.required"}),
    ({"id": "0"}, {"id.minimum"}),
    ({"id": "x"}, {"id.type"}),
    ({"code": "abc"}, {"code.pattern"}),
    ({"label": "a"}, {"label.min_length"}),
    ({"label": "abcdef"}, {"label.max_length"}),
    ({"kind": "c"}, {"kind.allowed_values"}),
    ({"score": "0"}, {"score.minimum"}),  # exclusive
    ({"score": "10"}, set()),  # inclusive
    ({"score": "10.5"}, {"score.maximum"}),
    ({"lo": "3", "hi": "2"}, {"lo_le_hi"}),
    ({"lo": "3", "hi": "NA"}, set()),  # a NULL row-rule result passes
    ({"flag": "maybe"}, {"flag.type"}),
    ({"day": "2020-12-31"}, {"day.type"}),
    ({"note": "toolong"}, {"note.max_length"}),  # warning only
    (
        {
            "code": "",
            "label": "NA",
            "kind": "  ",
            "score": "",
            "lo": "",
            "hi": "NA",
            "flag": "",
            "day": " ",
            "note": "",
        },
        set(),
    ),
    (
        {"id": "-2", "kind": "z", "note": "long"},
        {"id.minimum", "kind.allowed_values", "note.max_length"},
    ),
]
WARNING_RULES = {"note.max_length"}


@pytest.fixture
def validator(tmp_path: Path) -> RowValidator:
    doc = contract_doc(VALIDATOR_PROPS, quality=VALIDATOR_QUALITY)
    return RowValidator(load_contract(write_contract(tmp_path, doc)))


def _chunk(rows: list[dict[str, str | None]]) -> pl.DataFrame:
    frame = pl.DataFrame(rows, schema=dict.fromkeys(rows[0], pl.String))
    return frame.with_columns(
        pl.lit("f.csv").alias(FILE), pl.int_range(1, len(rows) + 1, dtype=pl.Int64).alias(ROW)
    )


def _violations_by_row(frame: pl.DataFrame) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for row, rule in frame.select(ROW, "rule_id").iter_rows():
        out.setdefault(row, set()).add(rule)
    return out


def test_each_rule_flags_exactly_its_rows(validator: RowValidator) -> None:
    checked = validator.validate(_chunk([{**GOOD_ROW, **change} for change, _ in CASES]))
    expected = {i: rules for i, (_, rules) in enumerate(CASES, start=1) if rules}
    assert _violations_by_row(checked.violations) == expected
    expected_fatal = [bool(rules - WARNING_RULES) for _, rules in CASES]
    assert checked.fatal.to_list() == expected_fatal
    severities = dict(checked.violations.select("rule_id", "severity").unique().iter_rows())
    assert severities["note.max_length"] == "warning"
    assert severities["kind.allowed_values"] == "fatal"


def test_typed_values(validator: RowValidator) -> None:
    checked = validator.validate(_chunk([GOOD_ROW, {**GOOD_ROW, "flag": "0", "score": " 2.5 "}]))
    assert checked.typed.row(0, named=True) == {
        FILE: "f.csv",
        ROW: 1,
        "id": 1,
        "code": "ABC",
        "label": "abc",
        "kind": "a",
        "score": 5.0,
        "lo": 1.0,
        "hi": 2.0,
        "flag": True,
        "day": dt.date(2020, 12, 31),
        "note": "ok",
    }
    assert checked.typed.row(1, named=True)["flag"] is False
    assert checked.typed.row(1, named=True)["score"] == 2.5
    assert checked.typed.schema["id"] == pl.Int64
    assert checked.typed.schema["day"] == pl.Date


@pytest.mark.parametrize("null", ["", "NA", "  ", None])
def test_null_spellings_violate_only_required(validator: RowValidator, null: str | None) -> None:
    row = {k: null for k in GOOD_ROW}
    checked = validator.validate(_chunk([row]))
    assert _violations_by_row(checked.violations) == {1: {"id.required"}}
    assert checked.typed.drop(FILE, ROW).null_count().row(0) == (1,) * len(GOOD_ROW)


def _one_column(tmp_path: Path, prop: dict[str, Any]) -> RowValidator:
    doc = contract_doc([{"name": "v", **prop}])
    return RowValidator(load_contract(write_contract(tmp_path, doc)))


def _typed_and_flags(v: RowValidator, values: list[str]) -> tuple[list[Any], list[bool]]:
    checked = v.validate(_chunk([{"v": x} for x in values]))
    bad = set(checked.violations.filter(pl.col("rule_id") == "v.type")[ROW].to_list())
    return checked.typed["v"].to_list(), [i in bad for i in range(1, len(values) + 1)]


def test_integer_parsing(tmp_path: Path) -> None:
    v = _one_column(tmp_path, {"logicalType": "integer"})
    values = [
        "12",
        "12.0",
        " -3 ",
        "+5",
        "1e3",
        "12.5",
        "1e400",
        "abc",
        "0x10",
        "9223372036854775807",
        "9223372036854775808",
        "1e19",
    ]
    typed, flagged = _typed_and_flags(v, values)
    assert typed == [12, 12, -3, 5, 1000, None, None, None, None, 2**63 - 1, None, None]
    assert flagged == [False] * 5 + [True] * 4 + [False] + [True] * 2


def test_number_rejects_non_finite(tmp_path: Path) -> None:
    v = _one_column(tmp_path, {"logicalType": "number"})
    values = ["1.5", "-2e3", ".5", "inf", "-inf", "nan", "NaN", "Infinity", "1e400", "1,5"]
    typed, flagged = _typed_and_flags(v, values)
    assert typed == [1.5, -2000.0, 0.5, *[None] * 7]
    assert flagged == [False] * 3 + [True] * 7


def test_boolean_spellings(tmp_path: Path) -> None:
    v = _one_column(tmp_path, {"logicalType": "boolean"})
    values = ["true", "T", "Yes", "y", "1", "FALSE", "f", "no", "N", "0", "maybe", "2", "oui"]
    typed, flagged = _typed_and_flags(v, values)
    assert typed == [True] * 5 + [False] * 5 + [None] * 3
    assert flagged == [False] * 10 + [True] * 3


def test_date_with_format(tmp_path: Path) -> None:
    v = _one_column(tmp_path, {"logicalType": "date", "logicalTypeOptions": {"format": "%d/%m/%Y"}})
    typed, flagged = _typed_and_flags(v, ["31/12/2020", "01/02/2021", "2020-12-31", "31/02/2020"])
    assert typed == [dt.date(2020, 12, 31), dt.date(2021, 2, 1), None, None]
    assert flagged == [False, False, True, True]


def test_iso_date_and_timestamp_defaults(tmp_path: Path) -> None:
    v = _one_column(tmp_path, {"logicalType": "date"})
    assert _typed_and_flags(v, ["2020-12-31", "31/12/2020"]) == (
        [dt.date(2020, 12, 31), None],
        [False, True],
    )
    t = _one_column(tmp_path, {"logicalType": "date", "physicalType": "timestamp"})
    typed, flagged = _typed_and_flags(t, ["2020-01-02T03:04:05", "2020-01-02 03:04:05", "noon"])
    assert typed == [dt.datetime(2020, 1, 2, 3, 4, 5)] * 2 + [None]
    assert flagged == [False, False, True]


def test_case_insensitive_enum(tmp_path: Path) -> None:
    v = _one_column(
        tmp_path,
        {
            "logicalType": "string",
            "enum": [{"value": "Fell"}, {"value": "Found"}],
            "customProperties": [{"property": "caseInsensitive", "value": True}],
        },
    )
    checked = v.validate(_chunk([{"v": "fell"}, {"v": "FOUND"}, {"v": "lost"}]))
    assert _violations_by_row(checked.violations) == {3: {"v.allowed_values"}}


def test_expression_passes_when_a_referenced_value_is_null(validator: RowValidator) -> None:
    rows = [
        {**GOOD_ROW, "lo": lo, "hi": hi}
        for lo, hi in [("NA", "1"), ("5", ""), (None, None), ("5", "1")]
    ]
    checked = validator.validate(_chunk(rows))
    assert _violations_by_row(checked.violations) == {4: {"lo_le_hi"}}
    assert checked.violations["value_provided"].to_list() == ["lo=5; hi=1"]


def test_warning_only_row_is_not_fatal(validator: RowValidator) -> None:
    checked = validator.validate(_chunk([{**GOOD_ROW, "note": "much too long"}]))
    assert checked.fatal.to_list() == [False]
    assert checked.violations.select("rule_id", "severity").rows() == [
        ("note.max_length", "warning")
    ]


def test_violation_row_reports_the_delivered_text(validator: RowValidator) -> None:
    checked = validator.validate(_chunk([GOOD_ROW, {**GOOD_ROW, "score": " 12.50 "}]))
    assert checked.violations.drop(FILE).row(0, named=True) == {
        ROW: 2,
        "rule_id": "score.maximum",
        "field": "score",
        "value_provided": " 12.50 ",
        "expected": "<= 10",
        "severity": "fatal",
        "category": "accuracy",
        "message": "score must be <= 10",
    }


def test_truncate_caps_a_huge_cell() -> None:
    huge = "abcde" * 10_000  # 50,000 bytes
    out = pl.select(truncate(pl.lit(pl.Series([huge, "short", None])))).to_series().to_list()
    assert out[0] == huge[: MAX_CELL_BYTES // 2] + TRUNCATION_MARKER.format(n=50_000)
    assert len(out[0].encode()) <= MAX_CELL_BYTES
    assert out[1:] == ["short", None]
    exactly = "x" * MAX_CELL_BYTES
    assert pl.select(truncate(pl.lit(exactly))).item() == exactly


def test_value_provided_is_truncated(validator: RowValidator) -> None:
    checked = validator.validate(_chunk([{**GOOD_ROW, "label": "L" * 50_000}]))
    provided = checked.violations["value_provided"].item()
    assert provided == "L" * (MAX_CELL_BYTES // 2) + TRUNCATION_MARKER.format(n=50_000)


# --- pandera schema ------------------------------------------------------------------------------

PANDERA_PROPS: list[dict[str, Any]] = [
    {
        "name": "id",
        "logicalType": "integer",
        "required": True,
        "primaryKey": True,
        "logicalTypeOptions": {"minimum": 1},
    },
    {
        "name": "kind",
        "logicalType": "string",
        "required": True,
        "enum": [{"value": "x"}, {"value": "y"}],
    },
    {"name": "lo", "logicalType": "number"},
    {
        "name": "hi",
        "logicalType": "number",
        "logicalTypeOptions": {"maximum": 100},
        "customProperties": [{"property": "severity", "value": {"maximum": "warning"}}],
    },
    {"name": "code", "logicalType": "string", "logicalTypeOptions": {"pattern": "^[A-Z]{2}$"}},
    {"name": "day", "logicalType": "date"},
]
PANDERA_QUALITY = [
    *_expr_rule("lo <= hi", rule_id="lo_le_hi"),
    {**_expr_rule("lo < 50", rule_id="lo_small")[0], "severity": "warning"},
]


@pytest.fixture
def typed_contract(tmp_path: Path) -> Contract:
    return load_contract(
        write_contract(tmp_path, contract_doc(PANDERA_PROPS, quality=PANDERA_QUALITY))
    )


def _good_typed() -> pl.DataFrame:
    # row 2 breaks the two warnings (hi > 100, lo >= 50) and nothing fatal
    return pl.DataFrame(
        {
            "id": [1, 2],
            "kind": ["x", "y"],
            "lo": [1.0, 60.0],
            "hi": [2.0, 500.0],
            "code": ["AB", None],
            "day": [dt.date(2020, 1, 1), None],
        }
    )


def test_pandera_accepts_a_good_frame_with_warnings(typed_contract: Contract) -> None:
    frame = _good_typed()
    assert pandera_schema(typed_contract).validate(frame, lazy=True).equals(frame)


@pytest.mark.parametrize(
    ("column", "values", "check", "index"),
    [
        ("id", [0, 2], "greater_than_or_equal_to(1.0)", 0),
        ("kind", ["x", "z"], "isin(['x', 'y'])", 1),
        ("lo", [3.0, 60.0], "lo_le_hi", 0),
        ("code", ["ab", None], "str_contains('^[A-Z]{2}$')", 0),
        ("kind", ["x", None], "not_nullable", 1),
    ],
    ids=["minimum", "enum", "expression", "pattern", "required"],
)
def test_pandera_rejects_fatal_breaks(
    typed_contract: Contract, column: str, values: list[Any], check: str, index: int
) -> None:
    frame = _good_typed().with_columns(pl.Series(column, values))
    with pytest.raises(pandera.errors.SchemaErrors) as info:
        pandera_schema(typed_contract).validate(frame, lazy=True)
    cases = info.value.failure_cases.select("check", "index").rows()
    assert cases == [(check, index)]


def test_pandera_flags_every_copy_of_a_duplicate_key(typed_contract: Contract) -> None:
    frame = _good_typed().with_columns(pl.Series("id", [2, 2]))
    with pytest.raises(pandera.errors.SchemaErrors) as info:
        pandera_schema(typed_contract).validate(frame, lazy=True)
    assert sorted(info.value.failure_cases.select("check", "index").rows()) == [
        ("field_uniqueness", 0),
        ("field_uniqueness", 1),
    ]


# --- JSON Schema ---------------------------------------------------------------------------------


@pytest.fixture
def record_validator(typed_contract: Contract) -> jsonschema.Draft202012Validator:
    schema = json_schema(typed_contract)
    jsonschema.Draft202012Validator.check_schema(schema)
    json.dumps(schema)  # serialisable as published
    return jsonschema.Draft202012Validator(schema)


def _errors(validator: jsonschema.Draft202012Validator, record: dict[str, Any]) -> list[str]:
    return sorted(e.message for e in validator.iter_errors(record))


def test_json_schema_accepts_good_records(
    record_validator: jsonschema.Draft202012Validator,
) -> None:
    assert _errors(record_validator, {"id": "1", "kind": "x"}) == []
    full = {"id": 3, "kind": "y", "lo": "1.5", "hi": "NA", "code": "AB", "day": "2020-01-01"}
    assert _errors(record_validator, full) == []
    assert _errors(record_validator, {"id": "1", "kind": "x", "extra": 1}) == []


def test_json_schema_rejects_bad_records(record_validator: jsonschema.Draft202012Validator) -> None:
    assert _errors(record_validator, {"kind": "x"}) == ["'id' is a required property"]
    assert _errors(record_validator, {"id": "1", "kind": "z"}) == ["'z' is not one of ['x', 'y']"]
    assert len(_errors(record_validator, {"id": 0, "kind": "x"})) == 1  # minimum 1
    assert len(_errors(record_validator, {"id": "1.5", "kind": "x"})) == 1  # not an integer
    assert len(_errors(record_validator, {"id": "1", "kind": "x", "lo": "abc"})) == 1
    assert len(_errors(record_validator, {"id": "1", "kind": "x", "code": "abc"})) == 1


def test_json_schema_does_not_enforce_warnings(
    record_validator: jsonschema.Draft202012Validator, typed_contract: Contract
) -> None:
    # hi's maximum is a warning: Flux loads such a record, so the schema must accept it.
    assert _errors(record_validator, {"id": "1", "kind": "x", "hi": 500}) == []
    rules = {r["id"]: r["severity"] for r in json_schema(typed_contract)["x-flux-row-rules"]}
    assert rules == {"lo_le_hi": "fatal", "lo_small": "warning"}
    assert json_schema(typed_contract)["x-flux-unique"] == [["id"]]


def test_meteorites_contract_exports(tmp_path: Path) -> None:
    """The one shipped contract these tests rely on: every export builds from it."""
    root = Path(__file__).resolve().parents[1] / "contracts" / "datasets" / "meteorites"
    contract = load_contract(root / "1.0.0.odcs.yaml")
    schema = json_schema(contract)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["required"] == ["id", "name", "nametype", "recclass", "fall"]
    assert contract.rule("year.maximum").severity == "warning"
    assert contract.column("mass_g").source_names == ("mass (g)",)
    assert set(pandera_schema(contract).columns) == set(contract.column_names)
