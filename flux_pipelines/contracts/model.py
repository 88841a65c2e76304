"""Flux's compiled view of a data contract.

Contracts are written in the Open Data Contract Standard (ODCS v3) and parsed with its
pydantic models (``open_data_contract_standard``); ``loader.py`` compiles them into these
smaller, strict models. Everything downstream (validator, DDL, pandera schema, JSON Schema,
contract page, demo generator) reads only these models, so there is one source of truth.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

LogicalType = Literal["string", "integer", "number", "boolean", "date", "timestamp"]
Severity = Literal["fatal", "warning"]
RuleKind = Literal[
    "required",
    "type",
    "allowed_values",
    "minimum",
    "maximum",
    "pattern",
    "min_length",
    "max_length",
    "unique",
    "expression",
]
# The Broker classes its rules by what they test; Flux keeps the same three classes.
Category = Literal["existence", "accuracy", "completeness"]

RULE_CATEGORY: dict[RuleKind, Category] = {
    "required": "existence",
    "type": "accuracy",
    "allowed_values": "accuracy",
    "minimum": "accuracy",
    "maximum": "accuracy",
    "pattern": "accuracy",
    "min_length": "accuracy",
    "max_length": "accuracy",
    "unique": "accuracy",
    "expression": "accuracy",
}

_frozen = ConfigDict(frozen=True, extra="forbid")


class AllowedValue(BaseModel):
    model_config = _frozen
    value: str
    description: str | None = None


class ColumnSpec(BaseModel):
    """One column of a dataset, as the contract states it."""

    model_config = _frozen
    name: str
    logical_type: LogicalType
    description: str = ""
    required: bool = False
    unique: bool = False
    primary_key: bool = False
    source_names: tuple[str, ...] = ()
    allowed_values: tuple[AllowedValue, ...] = ()
    case_insensitive_values: bool = False
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    pattern: str | None = None
    min_length: int | None = None
    max_length: int | None = None
    date_format: str | None = None
    unit: str | None = None
    examples: tuple[str, ...] = ()


class Rule(BaseModel):
    """A rule with a stable id, as reported in quarantine rows and agency reports."""

    model_config = _frozen
    id: str
    kind: RuleKind
    column: str | None = None
    columns: tuple[str, ...] = ()
    severity: Severity = "fatal"
    category: Category = "accuracy"
    message: str
    expected: str
    expression: str | None = None


class Contract(BaseModel):
    """A dataset version: columns, rules and delivery conventions."""

    model_config = _frozen
    id: str
    dataset: str
    version: str
    domain: str
    title: str
    description: str = ""
    status: str = "active"
    effective_from: dt.date = dt.date(2000, 1, 1)
    null_values: tuple[str, ...] = ("", "NA")
    columns: tuple[ColumnSpec, ...]
    rules: tuple[Rule, ...]
    source_path: str = ""
    extra: dict[str, str] = Field(default_factory=dict)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def identifier(self) -> list[str]:
        """Columns that identify a row (the Broker's 'Unique ID'); row number if none."""
        return [c.name for c in self.columns if c.primary_key]

    @property
    def required_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    def column(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def rule(self, rule_id: str) -> Rule:
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise KeyError(rule_id)

    @property
    def version_tag(self) -> str:
        return f"{self.dataset}@{self.version}"
