"""A contract compiled for generation: its columns, and what its rules let us plant and fix.

Why: row rules (``expression``) are SQL the generator cannot solve in general, but three
shapes are common and cheap to satisfy directly: ``a <= b`` (order the pair), ``x = f(y)``
(compute x) and ``a IS NULL OR b = 'v'`` (set b). Everything else is left to sampling with
the validator as the judge; the plan also says which rules can be planted and what the
validator reports for each.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import polars as pl

from flux_pipelines.contracts.model import Contract, Rule
from flux_pipelines.contracts.validator import RowValidator
from flux_pipelines.demo.columns import Column, build_column
from flux_pipelines.demo.draws import Rng

COMPARISON = re.compile(r"^\s*([a-z_][a-z0-9_]*)\s*(<=|<|>=|>)\s*([a-z_][a-z0-9_]*)\s*$")
_ASSIGNMENT = re.compile(r"^\s*([a-z_][a-z0-9_]*)\s*=(?!=)\s*(.+?)\s*$", re.DOTALL)
_IMPLICATION = re.compile(
    r"^\s*([a-z_][a-z0-9_]*)\s+IS\s+NULL\s+OR\s+([a-z_][a-z0-9_]*)\s*=\s*'([^']*)'\s*$", re.I
)
_STRING_LITERAL = re.compile(r"'((?:[^']|'')*)'")
_NUMBER_LITERAL = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")


@dataclass(frozen=True)
class Plan:
    """A contract compiled for generation; key constants derive from the delivery seed."""

    contract: Contract
    validator: RowValidator
    columns: tuple[Column, ...]
    plantable: tuple[Rule, ...]
    expected: Mapping[str, str]  # rule id -> sorted rule ids the validator reports for it
    comparisons: tuple[tuple[str, str, str], ...]  # (left, operator, right)
    assignments: tuple[tuple[str, str, tuple[str, ...]], ...] = ()  # "x = <sql of roots>"
    implications: tuple[tuple[str, str, str], ...] = ()  # "a IS NULL OR b = 'value'"
    literals: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def column(self, name: str) -> Column:
        return self.columns[self.contract.column_names.index(name)]


def compile_plan(
    contract: Contract, seed: int | str, total: int, validator: RowValidator | None = None
) -> Plan:
    """``validator``: one shared by the contract's deliveries, so their requests batch."""
    rng = Rng(f"{seed}:keys")
    rights = contract.content.rights_column if contract.content is not None else None
    columns = tuple(
        build_column(c, contract.rules, total, rng, stated=c.name == rights)
        for c in contract.columns
    )
    by_name = {c.name: c for c in columns}
    comparisons: list[tuple[str, str, str]] = []
    assignments: list[tuple[str, str, tuple[str, ...]]] = []
    implications: list[tuple[str, str, str]] = []
    literals: dict[str, tuple[str, ...]] = {}
    for rule in contract.rules:
        if rule.kind != "expression" or rule.expression is None:
            continue
        literals[rule.id] = _literals(rule.expression)
        match = COMPARISON.match(rule.expression)
        if match and _comparable(by_name.get(match[1]), by_name.get(match[3])):
            comparisons.append((match[1], match[2], match[3]))
        assignment = _assignment(rule.expression, by_name)
        if assignment is not None:
            assignments.append(assignment)
        implied = _IMPLICATION.match(rule.expression)
        if implied and all(n in by_name and not by_name[n].unique for n in implied.group(1, 2)):
            implications.append((implied[1], implied[2], implied[3]))
    return Plan(
        contract=contract,
        validator=validator or RowValidator(contract),
        columns=columns,
        plantable=tuple(r for r in contract.rules if _plantable(r, by_name)),
        expected=_expected(contract.rules),
        comparisons=tuple(comparisons),
        assignments=tuple(assignments),
        implications=tuple(implications),
        literals=literals,
    )


def _assignment(
    expression: str, columns: Mapping[str, Column]
) -> tuple[str, str, tuple[str, ...]] | None:
    """``x = <expression of other columns>``: x can be computed instead of guessed."""
    match = _ASSIGNMENT.match(expression)
    if match is None or match[1] not in columns or columns[match[1]].unique:
        return None
    try:
        roots = pl.sql_expr(match[2]).meta.root_names()
    except (pl.exceptions.PolarsError, ValueError):
        return None
    if match[1] in roots or not set(roots) <= set(columns):
        return None
    return match[1], match[2], tuple(dict.fromkeys(roots))


def _comparable(left: Column | None, right: Column | None) -> bool:
    ordered = {"integer", "number", "date", "timestamp"}
    return (
        left is not None
        and right is not None
        and left.spec.logical_type == right.spec.logical_type
        and left.spec.logical_type in ordered
        and not (left.unique or right.unique)
    )


def _literals(expression: str) -> tuple[str, ...]:
    """Constants in a row rule: values near them are where rules flip."""
    found = [s.replace("''", "'") for s in _STRING_LITERAL.findall(expression)]
    bare = _STRING_LITERAL.sub("", expression)
    for number in _NUMBER_LITERAL.findall(bare):
        if "." in number:
            found += [number, repr(float(number) - 1), repr(float(number) + 1)]
        else:
            found += [number, str(int(number) - 1), str(int(number) + 1)]
    return tuple(dict.fromkeys(found))


def _plantable(rule: Rule, columns: Mapping[str, Column]) -> bool:
    if rule.kind == "expression":
        return any(not columns[c].unique for c in rule.columns)
    if rule.kind == "unique":  # planted by copying the key (or the whole row) of another row
        return True
    column = columns[rule.column] if rule.column else None
    if column is None:
        return False
    spec = column.spec
    match rule.kind:
        case "min_length":
            return (spec.min_length or 0) >= 2
        case "minimum" | "maximum":
            return spec.logical_type in ("integer", "number")
        case "type":
            return spec.logical_type != "string"
    return True


def _expected(rules: Sequence[Rule]) -> dict[str, str]:
    """Per rule, what the validator reports for a row that breaks it: it and its duplicates
    (same kind, columns and expression), comma-joined in order; nothing for a unique rule."""
    same: dict[tuple[str, tuple[str, ...], str | None], list[str]] = {}
    for r in rules:
        same.setdefault((r.kind, tuple(r.columns), r.expression), []).append(r.id)
    return {
        r.id: ""
        if r.kind == "unique"
        else ",".join(sorted(same[(r.kind, tuple(r.columns), r.expression)]))
        for r in rules
    }


def unique_ids(rule: Rule, rules: Sequence[Rule]) -> list[str]:
    """The unique rules a copy of ``rule``'s key repeats: every key within its columns (the
    source row has a value in each, ``defects.py``)."""
    return sorted(r.id for r in keys_within(rule, rules))


def keys_within(rule: Rule, rules: Sequence[Rule]) -> list[Rule]:
    return [r for r in rules if r.kind == "unique" and set(r.columns) <= set(rule.columns)]
