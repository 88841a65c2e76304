"""Cross-dataset rules: SQL over an agency's tables, declared in the contract.

Three ways to declare one, all compiled to one query that returns this partition's violating
rows with both sides' values (``CROSS_OUTPUT_COLUMNS``):

- a schema-level ODCS ``relationships`` entry, ``type: foreignKey``: every row's key must
  exist in another dataset (``from: [study_id, core_id]``,
  ``to: [ccn_cores.study_id, ccn_cores.core_id]``). Rows with an empty key are left to the
  ``required`` rules;
- a schema-level ``quality`` entry ``type: custom, engine: flux, rule: sumReconciliation``
  with ``arguments`` (key, column, other dataset's key and column, an optional filter, the
  comparison and a relative tolerance): every row of a key whose sum breaks the comparison
  fails, with both sums and the difference;
- a schema-level ``quality`` entry ``type: sql, engine: flux`` whose ``query`` returns the
  violating rows itself, reading ``{{this}}`` (this partition) and ``{{<dataset>}}``.

The agency's other tables are read whole (every delivered day), so a reference is satisfied
by any earlier delivery of the referenced dataset.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, get_args

from open_data_contract_standard.model import CustomProperty, DataQuality, Relationship

from flux_pipelines.contracts.ddl import PARTITION, DatasetTables, curated_columns
from flux_pipelines.contracts.model import (
    CROSS_OUTPUT_COLUMNS,
    Category,
    Contract,
    CrossRule,
    Severity,
)
from flux_pipelines.errors import ConfigurationError
from flux_pipelines.slugs import check_slug
from flux_pipelines.sql import literal, quote

PLACEHOLDER = re.compile(r"\{\{\s*([a-z][a-z0-9_]*)\s*\}\}")
THIS = "this"
_COMPARISONS = {"<=": "<=", "=": "=", ">=": ">=", "==": "="}
_CATEGORIES: dict[str, Category] = {c: c for c in get_args(Category)}


def _custom(props: list[CustomProperty] | None) -> dict[str, Any]:
    return {p.property: p.value for p in (props or []) if p.property}


def _category(value: object, default: Category) -> Category:
    text = str(value or default).lower()
    return _CATEGORIES.get(text, default)


def _severity(value: object, where: str) -> Severity:
    text = str(value or "fatal").lower()
    if text in {"fatal", "error", "critical"}:
        return "fatal"
    if text in {"warning", "warn", "info"}:
        return "warning"
    raise ConfigurationError(f"{where}: severity {value!r} must be fatal or warning")


def _as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def compile_relationship(rel: Relationship, dataset: str, columns: list[str]) -> CrossRule:
    """A foreign key to another dataset of the same agency."""
    where = f"relationship {rel.id or '?'}"
    if (rel.type or "foreignKey") != "foreignKey":
        raise ConfigurationError(f"{where}: only type foreignKey is supported, not {rel.type!r}")
    if not rel.id:
        raise ConfigurationError(f"{where}: every relationship needs a stable id (its rule id)")
    check_slug(rel.id.replace(".", "_"), f"{where} id")
    mine, theirs = _as_list(rel.from_), _as_list(rel.to)
    if not mine or len(mine) != len(theirs):
        raise ConfigurationError(f"{where}: from and to must name the same number of columns")
    unknown = sorted(set(mine) - set(columns))
    if unknown:
        raise ConfigurationError(f"{where}: from names unknown columns {unknown}")
    targets = [t.split(".", 1) for t in theirs]
    if any(len(t) != 2 for t in targets) or len({t[0] for t in targets}) != 1:
        raise ConfigurationError(f"{where}: to must read <dataset>.<column>, one dataset")
    other = check_slug(targets[0][0], f"{where} target dataset")
    other_cols = [t[1] for t in targets]
    custom = _custom(rel.customProperties)
    key_text = ", ".join(mine)
    expected = f"an existing {other} row with the same {', '.join(other_cols)}"
    return CrossRule(
        id=rel.id,
        kind="reference",
        datasets=(other,),
        columns=tuple(mine),
        target_columns=tuple(other_cols),
        severity=_severity(custom.get("severity"), where),
        category=_category(custom.get("category"), "existence"),
        message=str(
            custom.get("message") or f"{key_text} does not reference an existing {other} row"
        ),
        expected=expected,
        query=_reference_query(mine, other, other_cols),
    )


def _reference_query(mine: list[str], other: str, theirs: list[str]) -> str:
    """Violations with the value provided and what the other side holds for the key prefix."""
    provided = " || ', ' || ".join(
        f"{literal(m + '=')} || coalesce(t.{quote(m)}::VARCHAR, '(empty)')" for m in mine
    )
    match = " AND ".join(f"o.{quote(o)} = t.{quote(m)}" for m, o in zip(mine, theirs, strict=True))
    not_null = " AND ".join(f"t.{quote(m)} IS NOT NULL" for m in mine)
    if len(mine) > 1:
        # Both sides' values: how many rows the other side has for the same leading key.
        prefix = " AND ".join(
            f"o.{quote(o)} = t.{quote(m)}" for m, o in zip(mine[:-1], theirs[:-1], strict=True)
        )
        lead = ", ".join(f"{o}" for o in theirs[:-1])
        context = (
            f"(SELECT count(*) FROM {{{{{other}}}}} o WHERE {prefix})::VARCHAR || "
            f"' {other} rows share {lead}'"
        )
    else:
        context = f"(SELECT count(*) FROM {{{{{other}}}}})::VARCHAR || ' {other} rows, none match'"
    return f"""SELECT t._file, t._row_number, {literal(", ".join(mine))} AS field,
  {provided} AS value_provided,
  {literal(f"an existing {other} row with the same {', '.join(theirs)} (")} || {context}
    || ')' AS expected,
  NULL::VARCHAR AS difference
FROM {{{{this}}}} t
WHERE {not_null}
  AND NOT EXISTS (SELECT 1 FROM {{{{{other}}}}} o WHERE {match})"""


def compile_quality(q: DataQuality, dataset: str, columns: list[str]) -> CrossRule | None:
    """A schema-level quality entry that is a cross-dataset rule, else None."""
    is_sum = (
        (q.type or "") == "custom"
        and (q.engine or "").lower() == "flux"
        and (q.rule or "") == "sumReconciliation"
    )
    is_sql = (q.type or "") == "sql" and (q.engine or "flux").lower() == "flux"
    if not (is_sum or is_sql):
        return None
    where = f"quality rule {q.id or q.name or '?'}"
    if not q.id:
        raise ConfigurationError(f"{where}: every quality rule needs a stable id")
    check_slug(q.id.replace(".", "_"), f"{where} id")
    severity = _severity(q.severity, where)
    if is_sum:
        return _compile_sum(q, q.id, severity, columns, where)
    query = str(q.query or "").strip()
    if not query:
        raise ConfigurationError(f"{where}: type sql needs a query returning the violating rows")
    others = sorted({n for n in PLACEHOLDER.findall(query) if n != THIS})
    if THIS not in PLACEHOLDER.findall(query):
        raise ConfigurationError(f"{where}: the query must read {{{{this}}}} (this partition)")
    return CrossRule(
        id=q.id,
        kind="sql",
        datasets=tuple(others),
        columns=(),
        severity=severity,
        category=_category(q.dimension, "accuracy"),
        message=(q.description or q.name or q.id).strip(),
        expected=str(_custom(q.customProperties).get("expected") or "see the rule's query"),
        query=query,
    )


def _compile_sum(
    q: DataQuality, rule_id: str, severity: Severity, columns: list[str], where: str
) -> CrossRule:
    args = q.arguments or {}
    try:
        key = _as_list(args["key"])
        column = str(args["column"])
        other = check_slug(str(args["otherDataset"]), f"{where} otherDataset")
        other_key = _as_list(args.get("otherKey", key))
        other_column = str(args.get("otherColumn", column))
    except KeyError as exc:
        raise ConfigurationError(
            f"{where}: sumReconciliation needs arguments key, column, otherDataset "
            f"(and optionally otherKey, otherColumn, otherFilter, comparison, tolerance); "
            f"missing {exc}"
        ) from exc
    unknown = sorted(set([*key, column]) - set(columns))
    if unknown or len(key) != len(other_key):
        raise ConfigurationError(
            f"{where}: key/column name unknown columns {unknown} or key lengths differ"
        )
    comparison = _COMPARISONS.get(str(args.get("comparison", "=")))
    if comparison is None:
        raise ConfigurationError(f"{where}: comparison must be one of {sorted(_COMPARISONS)}")
    tolerance = float(args.get("tolerance", 0.0))
    other_filter = str(args.get("otherFilter") or "TRUE")
    key_text = ", ".join(key)
    expected = (
        f"sum of {column} per {key_text} {comparison} the sum of {other}.{other_column}"
        + (f" (filter: {other_filter})" if other_filter != "TRUE" else "")
        + (f", tolerance {tolerance:g} of the larger sum" if tolerance else "")
    )
    return CrossRule(
        id=rule_id,
        kind="sum",
        datasets=(other,),
        columns=(*key, column),
        severity=severity,
        category=_category(q.dimension, "accuracy"),
        message=(q.description or f"sum of {column} per {key_text} does not reconcile").strip(),
        expected=expected,
        query=_sum_query(
            key, column, other, other_key, other_column, other_filter, comparison, tolerance
        ),
    )


def _sum_query(
    key: list[str],
    column: str,
    other: str,
    other_key: list[str],
    other_column: str,
    other_filter: str,
    comparison: str,
    tolerance: float,
) -> str:
    mine_keys = ", ".join(f"{quote(k)} AS k{i}" for i, k in enumerate(key))
    their_keys = ", ".join(f"{quote(k)} AS k{i}" for i, k in enumerate(other_key))
    group = ", ".join(str(i + 1) for i in range(len(key)))
    join = " AND ".join(f"m.k{i} = o.k{i}" for i in range(len(key)))
    back = " AND ".join(f"t.{quote(k)} = b.k{i}" for i, k in enumerate(key))
    slack = f"{tolerance!r} * greatest(abs(m.s), abs(coalesce(o.s, 0)))"
    test = {
        "<=": f"m.s <= coalesce(o.s, 0) + {slack}",
        ">=": f"m.s >= coalesce(o.s, 0) - {slack}",
        "=": f"abs(m.s - coalesce(o.s, 0)) <= {slack}",
    }[comparison]
    key_value = " || ', ' || ".join(
        f"{literal(k + '=')} || coalesce(b.k{i}::VARCHAR, '(empty)')" for i, k in enumerate(key)
    )
    return f"""WITH mine AS (
  SELECT {mine_keys}, sum({quote(column)})::DOUBLE AS s FROM {{{{this}}}} GROUP BY {group}
), theirs AS (
  SELECT {their_keys}, sum({quote(other_column)})::DOUBLE AS s
  FROM {{{{{other}}}}} WHERE {other_filter} GROUP BY {group}
), broken AS (
  SELECT m.*, m.s AS mine_sum, o.s AS their_sum FROM mine m LEFT JOIN theirs o ON {join}
  WHERE NOT ({test})
)
SELECT t._file, t._row_number, {literal(column)} AS field,
  'sum of {column} for ' || {key_value} || ': ' || printf('%.2f', b.mine_sum) AS value_provided,
  '{comparison} ' || coalesce(printf('%.2f', b.their_sum), '0 (no {other} rows for this key)')
    || ' = sum of {other}.{other_column}' AS expected,
  printf('%.2f', b.mine_sum - coalesce(b.their_sum, 0)) AS difference
FROM {{{{this}}}} t JOIN broken b ON {back}"""


def render(rule: CrossRule, contract: Contract, day_literal: str) -> str:
    """The rule's query against real tables: this partition and the other curated tables."""
    this = DatasetTables.for_dataset(contract.dataset).curated
    tables = {THIS: f"(SELECT * FROM {quote(this)} WHERE {PARTITION} = DATE {day_literal})"}
    for other in rule.datasets:
        tables[other] = quote(DatasetTables.for_dataset(other).curated)

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in tables:
            raise ConfigurationError(
                f"rule {rule.id}: {{{{{name}}}}} is not a dataset the rule declares"
            )
        return tables[name]

    return PLACEHOLDER.sub(substitute, rule.query)


def check_cross_rules(
    versions: list[Contract], contracts: dict[str, Contract], delivered: dict[str, set[str]]
) -> None:
    """Fail definitions load on a rule naming an unknown dataset or one an agency lacks.

    ``contracts`` holds each dataset's latest version (its table's columns); ``delivered``
    maps each dataset to the datasets delivered beside it by every agency that delivers it:
    a rule may read only tables that exist in each such agency's file.
    """
    for contract in versions:
        for rule in contract.cross_rules:
            where = f"contract {contract.source_path}: rule {rule.id}"
            missing = sorted(set(rule.datasets) - set(contracts))
            if missing:
                raise ConfigurationError(f"{where} reads unknown datasets {missing}")
            absent = sorted(set(rule.datasets) - delivered.get(contract.dataset, set()))
            if absent:
                raise ConfigurationError(
                    f"{where} reads {absent}, which some agency delivering "
                    f"{contract.dataset} does not deliver (contracts/agencies.yaml)"
                )


def check_cross_queries(versions: list[Contract], contracts: dict[str, Contract]) -> None:
    """Fail on a rule whose SQL does not run on its tables or returns other columns.

    Not part of the definitions load: it needs DuckDB, which the definitions must not import
    (definitions.py). ``flux contracts list``, ``flux dev`` and the test suite run it over
    the registry, and a load runs it for each rule before applying it (``explain``).
    """
    for contract in versions:
        for rule in contract.cross_rules:
            explain(rule, contract, contracts)


_EXPLAINED: set[tuple[str, ...]] = set()  # rules already explained in this process


def explain(rule: CrossRule, contract: Contract, contracts: Mapping[str, Contract]) -> None:
    """The rule's query runs on empty tables of its datasets and returns exactly
    ``CROSS_OUTPUT_COLUMNS``, or a ConfigurationError names contract, rule and problem.
    Once per rule and set of contract versions in a process (a step applies it every day)."""
    import duckdb

    versions = (f"{contracts[d].id}@{contracts[d].version}" for d in sorted(rule.datasets))
    memo = (contract.id, contract.version, rule.id, *versions)
    if memo in _EXPLAINED:
        return
    where = f"contract {contract.source_path}: rule {rule.id}"
    with duckdb.connect() as conn:
        for dataset in {contract.dataset, *rule.datasets}:
            table_contract = contract if dataset == contract.dataset else contracts[dataset]
            cols = ", ".join(
                f"{quote(n)} {t.split(' ')[0]}" for n, t in curated_columns(table_contract)
            )
            conn.execute(
                f"CREATE TABLE {quote(DatasetTables.for_dataset(dataset).curated)} ({cols})"
            )
        try:
            query = render(rule, contract, "'2000-01-01'")
            described = conn.execute(f"DESCRIBE SELECT * FROM ({query})").fetchall()
        except duckdb.Error as exc:
            raise ConfigurationError(f"{where}: the query does not run: {exc}") from exc
    names = tuple(row[0] for row in described)
    if names != CROSS_OUTPUT_COLUMNS:
        raise ConfigurationError(
            f"{where}: the query must return exactly {list(CROSS_OUTPUT_COLUMNS)}, "
            f"not {list(names)}"
        )
    _EXPLAINED.add(memo)
