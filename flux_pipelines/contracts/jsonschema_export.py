"""The agency-facing JSON Schema (Draft 2020-12) of one delivered record.

Agencies can validate a record before delivering it. Values are described as delivered
(text in CSV), so numbers accept numeric strings too; row rules that span columns are
listed under ``x-flux-row-rules`` since JSON Schema cannot express them portably.
"""

from __future__ import annotations

import re
from typing import Any

from flux_pipelines.contracts.logical_types import type_row
from flux_pipelines.contracts.model import ColumnSpec, Contract, NumberFormat
from flux_pipelines.contracts.rule_kinds import REGISTRY

DRAFT = "https://json-schema.org/draft/2020-12/schema"


def json_schema(contract: Contract) -> dict[str, Any]:
    # Only fatal rules reject a record: a value that merely earns a warning is still loaded.
    fatal: set[tuple[str | None, str]] = {
        (r.column, r.kind) for r in contract.rules if r.severity == "fatal"
    }
    properties = {c.name: _property(c, contract, fatal) for c in contract.columns}
    required = [c.name for c in contract.columns if (c.name, "required") in fatal]
    return {
        "$schema": DRAFT,
        "$id": f"urn:flux:contract:{contract.dataset}:{contract.version}",
        "title": f"{contract.title} ({contract.dataset} {contract.version})",
        "description": contract.description,
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": True,
        "x-flux-row-rules": [
            {"id": r.id, "expression": r.expression, "severity": r.severity, "message": r.message}
            for r in contract.rules
            if r.kind == "expression"
        ],
        # keys unique within a delivery: each a list of columns (several: together)
        "x-flux-unique": [list(r.columns) for r in contract.rules if r.kind == "unique"],
    }


def _property(
    column: ColumnSpec, contract: Contract, fatal: set[tuple[str | None, str]]
) -> dict[str, Any]:
    def enforced(kind: str) -> bool:
        return (column.name, kind) in fatal

    typed = type_row(column.logical_type).json_schema()
    if column.logical_type == "date" and column.date_format:  # not ISO: the declared format
        typed = {"type": "string", "x-flux-format": column.date_format}
    if column.number_format is not None:  # the text as the contract says it is written
        typed["anyOf"][1] = {
            "type": "string",
            "pattern": _formatted_pattern(column.number_format),
            "x-flux-number-format": column.number_format.describe(),
        }
    for kind, spec in REGISTRY.items():
        if spec.declared(column) and enforced(kind):
            spec.json_schema(column, typed)
    schema: dict[str, Any] = {"description": column.description} if column.description else {}
    if enforced("required"):
        schema.update(typed)
    else:
        schema["anyOf"] = [typed, {"type": "null"}, {"enum": list(contract.null_values)}]
    return schema


def _formatted_pattern(fmt: NumberFormat) -> str:
    """The shape of a formatted number's text (the validator's ``plain_numeral`` decides)."""
    space = r"\s*"
    symbol = "(?:" + "|".join(re.escape(c) for c in fmt.currency) + ")?" if fmt.currency else ""
    digits = "[0-9]*"
    if fmt.thousands is not None:
        sep = re.escape(fmt.thousands)
        digits = "(?:[0-9]{1,3}(?:" + sep + "[0-9]{3})+|[0-9]*)"
    number = "[+-]?" + symbol + space + "[+-]?" + digits
    number += "(?:" + re.escape(fmt.decimal) + "[0-9]*)?"
    if fmt.currency:
        number += space + symbol
    if fmt.percent:
        number += space + "%?"
    if fmt.negative_parentheses:
        number = "(?:" + number + r"|\(" + space + number + space + r"\))"
    return "^" + space + number + space + "$"
