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

# Delivery-level rules: a file that breaks one is quarantined whole (always fatal).
# rule id -> (message, expected)
DELIVERY_RULES: dict[str, tuple[str, str]] = {
    "delivery.empty_file": ("the file has no data rows", "at least one data row"),
    "delivery.bad_encoding": ("the file is not UTF-8 text", "UTF-8 text"),
    "delivery.unreadable": ("the file cannot be parsed", "a well-formed file"),
    "delivery.duplicate_columns": ("a column header appears twice", "each column once"),
    "delivery.missing_required_columns": (
        "a required column is missing",
        "every required column present",
    ),
    "delivery.unsupported_format": (
        "the file type is not supported",
        "csv, json, jsonl or parquet",
    ),
    "delivery.manifest_invalid": (
        "the manifest cannot be read",
        "a manifest in the documented format",
    ),
    "delivery.manifest_missing_file": (
        "a file the manifest lists was not delivered",
        "every file the manifest lists",
    ),
    "delivery.manifest_unlisted_file": (
        "a file is not listed in the manifest",
        "only files the manifest lists",
    ),
    "delivery.manifest_sha256_mismatch": (
        "the file's sha256 differs from the manifest",
        "the sha256 the manifest gives",
    ),
    "delivery.manifest_row_count_mismatch": (
        "the file's row count differs from the manifest",
        "the row count the manifest gives",
    ),
}


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
    # The column's name in the previous contract version (a rename): older days' rows are
    # stored under the new name, and deliveries still sending the old header map to it.
    renamed_from: str | None = None


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


CrossKind = Literal["reference", "sum", "sql"]
CROSS_OUTPUT_COLUMNS = ("_file", "_row_number", "field", "value_provided", "expected", "difference")


class CrossRule(BaseModel):
    """A rule over this dataset's partition and other datasets of the same agency file.

    Compiled to one SQL query returning the violating rows of this partition
    (``CROSS_OUTPUT_COLUMNS``); ``{{this}}`` stands for the partition's curated rows and
    ``{{<dataset>}}`` for another dataset's curated table (every day of it).
    """

    model_config = _frozen
    id: str
    kind: CrossKind
    datasets: tuple[str, ...]  # the other datasets it reads
    columns: tuple[str, ...] = ()  # this dataset's columns it judges
    target_columns: tuple[str, ...] = ()  # reference rules: the key columns referenced
    severity: Severity = "fatal"
    category: Category = "existence"
    message: str
    expected: str
    query: str


class CatalogueEntry(BaseModel):
    """One line of a contract's rule catalogue, whatever the rule's kind."""

    model_config = _frozen
    id: str
    scope: Literal["row", "cross-dataset", "delivery"]
    severity: Severity
    category: Category
    message: str
    expected: str
    default_severity: Severity


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
    cross_rules: tuple[CrossRule, ...] = ()
    # Per-agency severity overrides applied to this copy (rule id -> contract's severity).
    overridden: dict[str, Severity] = Field(default_factory=dict)
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

    def renamed(self, names: dict[str, str]) -> Contract:
        """This version with columns renamed (old -> new): how its rows are stored once a
        later version renamed them. Rules follow their columns."""
        if not names:
            return self

        def new(name: str | None) -> str | None:
            return names.get(name, name) if name is not None else None

        return self.model_copy(
            update={
                "columns": tuple(
                    c.model_copy(update={"name": names[c.name], "renamed_from": c.name})
                    if c.name in names
                    else c
                    for c in self.columns
                ),
                "rules": tuple(
                    r.model_copy(
                        update={
                            "column": new(r.column),
                            "columns": tuple(names.get(c, c) for c in r.columns),
                        }
                    )
                    for r in self.rules
                ),
            }
        )

    @property
    def rule_ids(self) -> set[str]:
        return {r.id for r in self.rules} | {r.id for r in self.cross_rules}

    def catalogue(self) -> list[CatalogueEntry]:
        """Every rule with a stable id, as the contract page and the UI list them."""
        entries = [
            CatalogueEntry(
                id=r.id,
                scope="row",
                severity=r.severity,
                category=r.category,
                message=r.message,
                expected=r.expected,
                default_severity=self.overridden.get(r.id, r.severity),
            )
            for r in self.rules
        ]
        entries += [
            CatalogueEntry(
                id=r.id,
                scope="cross-dataset",
                severity=r.severity,
                category=r.category,
                message=r.message,
                expected=r.expected,
                default_severity=self.overridden.get(r.id, r.severity),
            )
            for r in self.cross_rules
        ]
        entries += [
            CatalogueEntry(
                id=rule_id,
                scope="delivery",
                severity="fatal",
                category="existence",
                message=message,
                expected=expected,
                default_severity="fatal",
            )
            for rule_id, (message, expected) in DELIVERY_RULES.items()
        ]
        return entries

    def with_severities(self, overrides: dict[str, Severity]) -> Contract:
        """This contract as one agency sees it (the Broker lets agencies set significance)."""
        unknown = sorted(set(overrides) - self.rule_ids)
        if unknown:
            raise KeyError(", ".join(unknown))
        if not overrides:
            return self
        return self.model_copy(
            update={
                "rules": tuple(
                    r.model_copy(update={"severity": overrides[r.id]}) if r.id in overrides else r
                    for r in self.rules
                ),
                "cross_rules": tuple(
                    r.model_copy(update={"severity": overrides[r.id]}) if r.id in overrides else r
                    for r in self.cross_rules
                ),
                "overridden": {
                    rid: self.rule_severity(rid)
                    for rid in overrides
                    if overrides[rid] != self.rule_severity(rid)
                },
            }
        )

    def rule_severity(self, rule_id: str) -> Severity:
        for r in (*self.rules, *self.cross_rules):
            if r.id == rule_id:
                return r.severity
        raise KeyError(rule_id)

    def rule(self, rule_id: str) -> Rule:
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise KeyError(rule_id)

    @property
    def version_tag(self) -> str:
        return f"{self.dataset}@{self.version}"
