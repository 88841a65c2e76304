"""The rule-kind registry: every kind Flux names has one module, and what each module says
about itself holds: its planted defects break exactly its rule in the validator, its
pandera check refuses them on curated rows, and its JSON Schema part refuses them for
agencies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import jsonschema
import pandera.errors
import polars as pl
import pytest

from flux_pipelines.contracts.jsonschema_export import json_schema
from flux_pipelines.contracts.loader import load_contract
from flux_pipelines.contracts.model import Contract, RuleKind
from flux_pipelines.contracts.pandera_schema import pandera_schema
from flux_pipelines.contracts.rule_kinds import REGISTRY
from flux_pipelines.contracts.validator import FILE, ROW, RowValidator
from flux_pipelines_tests.conftest import contract_doc, write_contract

# A column declaring each kind (with nothing else that its defects would also break).
DECLARING: dict[str, dict[str, Any]] = {
    "required": {"logicalType": "string", "required": True},
    "type": {"logicalType": "integer"},
    "allowed_values": {"logicalType": "string", "enum": [{"value": "a"}, {"value": "b"}]},
    "minimum": {"logicalType": "number", "logicalTypeOptions": {"minimum": 10}},
    "maximum": {"logicalType": "integer", "logicalTypeOptions": {"maximum": 10}},
    "pattern": {"logicalType": "string", "logicalTypeOptions": {"pattern": "^[A-Z]+$"}},
    "min_length": {"logicalType": "string", "logicalTypeOptions": {"minLength": 3}},
    "max_length": {"logicalType": "string", "logicalTypeOptions": {"maxLength": 3}},
}
# Kinds whose defects are planted by the generator itself (repeated keys, SQL expressions).
PLANTED_BY_THE_GENERATOR = {"unique", "expression"}


def _contract(tmp_path: Path, kind: str) -> Contract:
    doc = contract_doc([{"name": "v", **DECLARING[kind]}], name="kinds")
    return load_contract(write_contract(tmp_path / kind, doc))


def test_every_rule_kind_has_one_registry_entry() -> None:
    assert set(REGISTRY) == set(get_args(RuleKind))
    assert set(DECLARING) | PLANTED_BY_THE_GENERATOR == set(REGISTRY)


@pytest.mark.parametrize("kind", sorted(DECLARING))
def test_a_kinds_defects_break_exactly_its_rule(tmp_path: Path, kind: str) -> None:
    contract = _contract(tmp_path, kind)
    column = contract.column("v")
    spec = REGISTRY[kind]  # type: ignore[index]
    assert spec.declared(column)
    (rule,) = [r for r in contract.rules if r.kind == kind]
    assert (rule.message, rule.expected) == spec.words(column)
    defects = spec.defects(column)
    assert defects, f"{kind} plants no defect"
    chunk = pl.DataFrame({FILE: "f.csv", ROW: range(1, len(defects) + 1), "v": defects})
    found = RowValidator(contract).validate(chunk).violations
    assert found.get_column("rule_id").to_list() == [f"v.{kind}"] * len(defects), (
        kind,
        defects,
        found,
    )


# required and type are the curated column's nullability and dtype, not checks of their own
STRUCTURAL = {"required", "type"}


@pytest.mark.parametrize("kind", sorted(DECLARING))
def test_a_kinds_pandera_check_refuses_a_typed_defect(tmp_path: Path, kind: str) -> None:
    contract = _contract(tmp_path, kind)
    column = contract.column("v")
    checks = REGISTRY[kind].pandera_checks(column)  # type: ignore[index]
    assert bool(checks) == (kind not in STRUCTURAL)
    validator = RowValidator(contract)
    defects = [d for d in REGISTRY[kind].defects(column) if d]  # type: ignore[index]
    typed = pl.DataFrame({"v": defects}).select(validator.typed_expr(column).alias("v"))
    if kind == "type":  # not of the type: typed as null, which the dtype check cannot see
        assert typed.get_column("v").null_count() == len(defects)
        return
    with pytest.raises(pandera.errors.SchemaError):
        pandera_schema(contract).validate(typed if kind != "required" else typed.clear(1))


@pytest.mark.parametrize("kind", sorted(DECLARING))
def test_a_kinds_json_schema_refuses_its_defects(tmp_path: Path, kind: str) -> None:
    """In JSON, numbers arrive as numbers: bounds apply to them (a CSV's text is typed by
    the validator, whose spellings a JSON Schema pattern cannot bound)."""
    contract = _contract(tmp_path, kind)
    schema = jsonschema.Draft202012Validator(json_schema(contract))
    numeric = kind in ("minimum", "maximum")
    for defect in REGISTRY[kind].defects(contract.column("v")):  # type: ignore[index]
        record: dict[str, Any] = {"v": json.loads(defect) if numeric else defect}
        if kind == "required":
            record = {}
        assert list(schema.iter_errors(record)), (kind, record)
