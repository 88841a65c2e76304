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

# A column declaring each kind (with nothing else that its defects would also break), and a
# valid value the defects are derived from.
VALID = {
    "required": "a",
    "type": "12",
    "allowed_values": "a",
    "minimum": "12",
    "maximum": "7",
    "pattern": "ABC",
    "min_length": "abc",
    "max_length": "ab",
}
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


def _defects(kind: str, contract: Contract) -> list[str | None]:
    """The kind's defects as texts, derived from the kind's valid sample value."""
    options = REGISTRY[kind].defects(contract.column("v"), pl.lit(VALID[kind]))  # type: ignore[index]
    return [pl.select(pl.lit(o) if not isinstance(o, pl.Expr) else o).item() for o in options]


def _breaking(kind: str, contract: Contract) -> list[str | None]:
    """The defects the validator flags (the ones the generator would keep)."""
    defects = _defects(kind, contract)
    chunk = pl.DataFrame({FILE: "f.csv", ROW: range(1, len(defects) + 1), "v": defects})
    rows = set(RowValidator(contract).validate(chunk).violations.get_column(ROW))
    return [d for i, d in enumerate(defects, start=1) if i in rows]


def test_every_rule_kind_has_one_registry_entry() -> None:
    assert set(REGISTRY) == set(get_args(RuleKind))
    assert set(DECLARING) | PLANTED_BY_THE_GENERATOR == set(REGISTRY)


@pytest.mark.parametrize("kind", sorted(DECLARING))
def test_a_kinds_defects_break_only_its_rule(tmp_path: Path, kind: str) -> None:
    contract = _contract(tmp_path, kind)
    column = contract.column("v")
    spec = REGISTRY[kind]  # type: ignore[index]
    assert spec.declared(column)
    (rule,) = [r for r in contract.rules if r.kind == kind]
    assert (rule.message, rule.expected) == spec.words(column)
    defects = _defects(kind, contract)
    assert defects, f"{kind} plants no defect"
    chunk = pl.DataFrame({FILE: "f.csv", ROW: range(1, len(defects) + 1), "v": defects})
    found = RowValidator(contract).validate(chunk).violations
    # candidates: a case variant may happen to be valid, but none breaks another rule, and
    # most break this one (the generator keeps one the validator reports as exactly this)
    assert set(found.get_column("rule_id")) == {f"v.{kind}"}, (kind, defects, found)
    assert found.height >= max(1, len(defects) // 2), (kind, defects, found)


# required and type are the curated column's nullability and dtype, not checks of their own
STRUCTURAL = {"required", "type"}


@pytest.mark.parametrize("kind", sorted(DECLARING))
def test_a_kinds_pandera_check_refuses_a_typed_defect(tmp_path: Path, kind: str) -> None:
    contract = _contract(tmp_path, kind)
    column = contract.column("v")
    checks = REGISTRY[kind].pandera_checks(column)  # type: ignore[index]
    assert bool(checks) == (kind not in STRUCTURAL)
    validator = RowValidator(contract)
    defects = [d for d in _breaking(kind, contract) if d and d.strip()]
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
    for defect in _breaking(kind, contract):
        record: dict[str, Any] = {"v": json.loads(defect) if numeric and defect else defect}
        if kind == "required":
            record = {}
        assert list(schema.iter_errors(record)), (kind, record)
