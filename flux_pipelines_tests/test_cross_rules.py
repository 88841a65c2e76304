"""Cross-dataset rules and per-agency severity overrides, on small contracts in tmp_path.

Each rule runs inside the load's transaction against real DuckDB tables; expectations are
written out by hand from the delivered rows.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from flux_pipelines.contracts.page import contract_page
from flux_pipelines.contracts.registry import Registry, load_registry
from flux_pipelines.errors import ConfigurationError
from flux_pipelines.ingest.cross_checks import apply_cross_rules
from flux_pipelines.ingest.readers import inspect_file, read_chunks
from flux_pipelines.resources.warehouse import ensure_tables
from flux_pipelines_tests.conftest import DAY, contract_doc, run_load, write_contract

PARENTS = [
    {"name": "id", "logicalType": "integer", "required": True, "primaryKey": True},
    {"name": "region", "logicalType": "string", "required": True},
    {"name": "budget", "logicalType": "number"},
]
CHILD_RELATION = {
    "id": "children.parent_exists",
    "type": "foreignKey",
    "from": ["parent_id"],
    "to": ["parents.id"],
    "customProperties": [{"property": "message", "value": "parent_id names no parent"}],
}
SUM_RULE = {
    "id": "children.within_budget",
    "type": "custom",
    "engine": "flux",
    "rule": "sumReconciliation",
    "severity": "warning",
    "description": "spending per region exceeds the parents' budget",
    "arguments": {
        "key": ["region"],
        "column": "amount",
        "otherDataset": "parents",
        "otherColumn": "budget",
        "comparison": "<=",
    },
}


def _registry(root: Path, overrides: dict[str, Any] | None = None, **child: Any) -> Registry:
    write_contract(root, contract_doc(PARENTS, name="parents"))
    doc = contract_doc(
        [
            {"name": "id", "logicalType": "integer", "required": True, "primaryKey": True},
            {"name": "parent_id", "logicalType": "integer"},
            {"name": "region", "logicalType": "string"},
            {"name": "amount", "logicalType": "number", "logicalTypeOptions": {"minimum": 0}},
        ],
        name="children",
        quality=child.get("quality", [SUM_RULE]),
    )
    doc["schema"][0]["relationships"] = child.get("relationships", [CHILD_RELATION])
    write_contract(root, doc)
    agency: dict[str, Any] = {
        "id": "alpha",
        "name": "Alpha",
        "datasets": ["parents", "children"],
    }
    if overrides:
        agency["severity_overrides"] = overrides
    (root / "agencies.yaml").write_text(yaml.safe_dump({"agencies": [agency]}), encoding="utf-8")
    load_registry.cache_clear()
    return load_registry(root)


def _csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _load_both(
    tmp_path: Path, registry: Registry, conn: duckdb.DuckDBPyConnection, children: str
) -> Any:
    agency = registry.agency("alpha")
    parents = registry.contract_for("parents", DAY, agency)
    run_load(
        conn,
        parents,
        [_csv(tmp_path / "parents.csv", "id,region,budget\n1,north,100\n2,north,50\n3,south,10\n")],
        tmp_path,
    )
    contract = registry.contract_for("children", DAY, agency)
    return run_load(
        conn,
        contract,
        [_csv(tmp_path / "children.csv", children)],
        tmp_path,
        references=registry.references_for(contract, DAY),
    )


CHILDREN = (
    "id,parent_id,region,amount\n"
    "10,1,north,60\n"  # ok
    "11,9,north,20\n"  # orphan parent 9
    "12,,north,5\n"  # no parent given: not a reference
    "13,3,south,30\n"  # south spends 30 > budget 10
    "14,2,west,1\n"  # west has no budget at all
    "15,1,north,-4\n"  # fails a row rule (amount minimum): never reaches the cross rules
)


def test_reference_rule_quarantines_orphans_with_both_sides(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    result = _load_both(tmp_path, _registry(tmp_path), conn, CHILDREN)
    rows = conn.execute(
        "SELECT _row_number, field, value_provided, expected, unique_id, original_row->>'id' "
        "FROM children_quarantine WHERE rule_id = 'children.parent_exists'"
    ).fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [(2, "parent_id", "parent_id=9")]
    assert "an existing parents row with the same id" in rows[0][3]
    assert "3 parents rows, none match" in rows[0][3]
    assert rows[0][4] == "id=11" and rows[0][5] == "11"
    curated = {r[0] for r in conn.execute("SELECT id FROM children").fetchall()}
    assert curated == {10, 12, 13, 14}
    # nothing lost: read = curated + quarantined, per file
    assert result.rows_in == 6 and result.rows_curated + result.rows_quarantined == 6
    assert result.rule_counts["children.parent_exists"] == 1


def test_sum_rule_flags_every_row_of_a_key_that_does_not_reconcile(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    _load_both(tmp_path, _registry(tmp_path), conn, CHILDREN)
    rows = conn.execute(
        "SELECT _row_number, value_provided, expected, difference FROM children_warnings "
        "WHERE rule_id = 'children.within_budget' ORDER BY 1"
    ).fetchall()
    # north: 60 + 5 = 65 <= 150 (row 11 was quarantined); south 30 > 10; west 1 > nothing
    assert [r[0] for r in rows] == [4, 5]
    south, west = rows
    assert south[1] == "sum of amount for region=south: 30.00"
    assert south[2].startswith("<= 10.00") and south[3] == "20.00"
    assert "no parents rows for this key" in west[2] and west[3] == "1.00"
    # a warning loads the row
    assert conn.execute("SELECT count(*) FROM children WHERE id IN (13, 14)").fetchall() == [(2,)]


def test_fatal_cross_rule_moves_the_rows_warnings_to_quarantine(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    registry = _registry(tmp_path, {"children": {"children.within_budget": "fatal"}})
    result = _load_both(tmp_path, registry, conn, CHILDREN)
    assert conn.execute("SELECT count(*) FROM children_warnings").fetchall() == [(0,)]
    moved = conn.execute(
        "SELECT _row_number, severity FROM children_quarantine "
        "WHERE rule_id = 'children.within_budget' ORDER BY 1"
    ).fetchall()
    assert moved == [(4, "fatal"), (5, "fatal")]
    assert {r[0] for r in conn.execute("SELECT id FROM children").fetchall()} == {10, 12}
    assert result.rows_curated + result.rows_quarantined == result.rows_in == 6


def test_agency_override_turns_a_fatal_reference_into_a_warning(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    registry = _registry(tmp_path, {"children": {"children.parent_exists": "warning"}})
    contract = registry.contract_for("children", DAY, registry.agency("alpha"))
    assert contract.rule_severity("children.parent_exists") == "warning"
    assert contract.overridden == {"children.parent_exists": "fatal"}
    assert registry.latest("children").rule_severity("children.parent_exists") == "fatal"
    _load_both(tmp_path, registry, conn, CHILDREN)
    assert conn.execute(
        "SELECT _row_number FROM children_warnings WHERE rule_id = 'children.parent_exists'"
    ).fetchall() == [(2,)]
    assert conn.execute("SELECT count(*) FROM children WHERE id = 11").fetchall() == [(1,)]
    page = contract_page(contract, {"alpha": {"children.parent_exists": "warning"}})
    assert "warning (agency override; contract: fatal)" in page
    assert "`alpha`: `children.parent_exists` -> warning" in page


def test_override_of_a_row_rule_loads_the_row(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    registry = _registry(tmp_path, {"children": {"amount.minimum": "warning"}})
    _load_both(tmp_path, registry, conn, CHILDREN)
    assert conn.execute("SELECT count(*) FROM children WHERE id = 15").fetchall() == [(1,)]
    assert conn.execute(
        "SELECT _row_number FROM children_warnings WHERE rule_id = 'amount.minimum'"
    ).fetchall() == [(6,)]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"children": {"nope.rule": "warning"}}, "overrides unknown children rules ['nope.rule']"),
        ({"elsewhere": {"x": "warning"}}, "which it does not deliver"),
    ],
)
def test_bad_override_is_a_configuration_error(
    tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _registry(tmp_path, overrides)


def test_cross_rule_sql_is_checked_before_it_runs(tmp_path: Path) -> None:
    bad = {
        "id": "children.bad_sql",
        "type": "sql",
        "engine": "flux",
        "query": "SELECT t._file, t._row_number FROM {{this}} t JOIN {{parents}} p ON p.nope = 1",
    }
    with pytest.raises(ConfigurationError, match=r"children\.bad_sql: the query does not run"):
        _registry(tmp_path, quality=[bad]).check_cross_queries()
    short = dict(bad, query="SELECT t._file, t._row_number FROM {{this}} t, {{parents}} p")
    registry = _registry(tmp_path, quality=[short])
    with pytest.raises(ConfigurationError, match="must return exactly"):
        registry.check_cross_queries()
    # a load applying the rule fails with the same classified error, not a DuckDB one
    contract = registry.latest("children")
    with duckdb.connect() as conn:
        ensure_tables(conn, contract)
        with pytest.raises(ConfigurationError, match="must return exactly"):
            apply_cross_rules(
                conn,
                contract,
                dt.date(2026, 1, 5),
                run_id="r",
                loaded_at=dt.datetime(2026, 1, 5),
                references=registry.references_for(contract, dt.date(2026, 1, 5)),
            )


def test_reference_to_a_dataset_the_agency_does_not_deliver_is_refused(tmp_path: Path) -> None:
    relation = dict(CHILD_RELATION, to=["ghosts.id"])
    with pytest.raises(ConfigurationError, match="unknown datasets"):
        _registry(tmp_path, relationships=[relation], quality=[])


def test_rule_catalogue_lists_row_cross_dataset_and_delivery_rules(tmp_path: Path) -> None:
    contract = _registry(tmp_path).latest("children")
    scopes = {e.id: e.scope for e in contract.catalogue()}
    assert scopes["amount.minimum"] == "row"
    assert scopes["children.parent_exists"] == "cross-dataset"
    assert scopes["delivery.missing_required_columns"] == "delivery"
    categories = {e.id: e.category for e in contract.catalogue()}
    assert categories["children.parent_exists"] == "existence"
    assert categories["id.required"] == "existence"


def test_classic_mac_line_endings_are_read_as_lines(tmp_path: Path) -> None:
    path = tmp_path / "cr.csv"
    path.write_bytes(b"id,region,budget\r1,north,100\r2,south,5\r")
    facts = inspect_file(path)
    assert facts.headers == ("id", "region", "budget")
    rows = [r for chunk in read_chunks(facts) for r in chunk.select("id", "region").iter_rows()]
    assert rows == [("1", "north"), ("2", "south")]


def test_reference_is_satisfied_by_an_earlier_delivery(
    tmp_path: Path, conn: duckdb.DuckDBPyConnection
) -> None:
    registry = _registry(tmp_path)
    _load_both(tmp_path, registry, conn, "id,parent_id,region,amount\n1,1,north,1\n")
    contract = registry.contract_for("children", DAY + dt.timedelta(days=1))
    later = DAY + dt.timedelta(days=1)
    run_load(
        conn,
        contract,
        [_csv(tmp_path / "later.csv", "id,parent_id,region,amount\n2,3,south,1\n")],
        tmp_path,
        day=later,
        references=registry.references_for(contract, later),
    )
    assert conn.execute(
        "SELECT count(*) FROM children_quarantine WHERE _partition_date = ?", [later]
    ).fetchall() == [(0,)]
