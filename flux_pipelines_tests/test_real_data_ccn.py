"""Every real CCN study as its own delivery, through the partition loader.

Expectations are computed independently with plain polars on the real files (not with the
validator), then compared with what landed in curated and quarantine, row by row.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from pathlib import Path

import duckdb
import polars as pl
import pytest

from flux_pipelines.contracts.model import Contract
from flux_pipelines.contracts.registry import load_registry
from flux_pipelines.ingest.delivery import PartitionLoader, PartitionResult, load_partition
from flux_pipelines.slugs import normalise_header

pytestmark = [pytest.mark.slow, pytest.mark.realdata]
FIRST_DAY = dt.date(2026, 1, 5)  # smithsonian-serc's onboarding


def _study_files(real_data: Path, suffix: str) -> list[Path]:
    return sorted((real_data / "ccn" / "studies").glob(f"*/*_{suffix}.csv"))


def _read(path: Path) -> pl.DataFrame:
    frame = pl.read_csv(path, infer_schema=False, null_values=["NA", ""])
    frame = frame.rename({c: normalise_header(c) for c in frame.columns})
    return frame.with_row_index("row", offset=1).with_columns(pl.col("row").cast(pl.Int64))


def _number(frame: pl.DataFrame, column: str) -> pl.Expr:
    if column not in frame.columns:
        return pl.lit(None, dtype=pl.Float64)
    return pl.col(column).str.strip_chars().cast(pl.Float64, strict=False)


def _load_all(
    tmp_path: Path,
    contract: Contract,
    files: list[Path],
    conn: duckdb.DuckDBPyConnection | None = None,
) -> tuple[duckdb.DuckDBPyConnection, dict[str, PartitionResult]]:
    conn = conn or duckdb.connect(str(tmp_path / "smithsonian-serc.duckdb"))
    registry = load_registry()
    results = {}
    for i, path in enumerate(files):
        day = FIRST_DAY + dt.timedelta(days=i)
        loader = PartitionLoader(
            conn,
            agency="smithsonian-serc",
            contract=contract,
            day=day,
            run_id="ccn-test",
            raw_root=tmp_path / "raw" / contract.dataset,
            references=registry.references_for(contract, day),
        )
        results[path.name] = load_partition(loader, [path])
    return conn, results


@pytest.fixture(scope="module")
def ccn_loaded(
    tmp_path_factory: pytest.TempPathFactory, real_data: Path
) -> tuple[duckdb.DuckDBPyConnection, dict[str, PartitionResult], dict[str, PartitionResult]]:
    """Every study's cores, then every study's depthseries, into one agency file."""
    registry = load_registry()
    tmp = tmp_path_factory.mktemp("ccn")
    conn, cores = _load_all(tmp, registry.latest("ccn_cores"), _study_files(real_data, "cores"))
    _, depths = _load_all(
        tmp, registry.latest("ccn_depthseries"), _study_files(real_data, "depthseries"), conn
    )
    return conn, cores, depths


def _flagged(conn: duckdb.DuckDBPyConnection, table: str, rule_id: str) -> set[tuple[str, int]]:
    rows = conn.execute(
        f"SELECT _file, _row_number FROM {table} WHERE rule_id = ?", [rule_id]
    ).fetchall()
    return {(f, int(r)) for f, r in rows}


def _expected(
    files: list[Path], rejected: set[str], predicate: dict[str, object]
) -> dict[str, set[tuple[str, int]]]:
    found: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for path in files:
        if path.name in rejected:
            continue
        frame = _read(path)
        for rule_id, build in predicate.items():
            expr = build(frame)  # type: ignore[operator]
            for row in frame.filter(expr.fill_null(False)).get_column("row").to_list():
                found[rule_id].add((path.name, row))
    return found


def _missing_required(path: Path, contract: Contract) -> list[str]:
    header = {normalise_header(h) for h in pl.read_csv(path, n_rows=0, infer_schema=False).columns}
    return [c for c in contract.required_columns if c not in header]


def test_ccn_depthseries_every_study(real_data: Path, ccn_loaded) -> None:  # type: ignore[no-untyped-def]
    contract = load_registry().latest("ccn_depthseries")
    files = _study_files(real_data, "depthseries")
    assert len(files) >= 100
    conn, _, results = ccn_loaded

    # Nothing lost: every study's rows are curated or quarantined.
    for path in files:
        result = results[path.name]
        delivered = pl.read_csv(path, infer_schema=False).height
        assert result.rows_in == delivered, path.name
        assert result.rows_curated + result.rows_quarantined == delivered, path.name

    # Missing required columns: exactly the studies whose header lacks one, whole file.
    rejected = {n for n, r in results.items() if r.errors}
    expected_rejected = {p.name for p in files if _missing_required(p, contract)}
    assert rejected == expected_rejected and rejected
    for name in rejected:
        assert [e.rule_id for e in results[name].errors] == ["delivery.missing_required_columns"]

    # Each known defect, attributed to the right rule and row.
    expected = _expected(
        files,
        rejected,
        {
            "depth_order": lambda f: _number(f, "depth_min") > _number(f, "depth_max"),
            "fraction_carbon.minimum": lambda f: _number(f, "fraction_carbon") < 0,
            "fraction_carbon.maximum": lambda f: _number(f, "fraction_carbon") > 1,
            "dry_bulk_density.minimum": lambda f: _number(f, "dry_bulk_density") <= 0,
        },
    )
    assert expected["depth_order"], "the real data has depth_min > depth_max rows"
    assert expected["dry_bulk_density.minimum"], "the real data has non-positive densities"
    assert expected["fraction_carbon.minimum"] | expected["fraction_carbon.maximum"]
    for rule_id, rows in expected.items():
        assert _flagged(conn, "ccn_depthseries_quarantine", rule_id) == rows, rule_id
    # Quarantined rows never reach curated.
    overlap = conn.execute(
        "SELECT count(*) FROM ccn_depthseries c JOIN ccn_depthseries_quarantine q "
        "USING (_partition_date, _file, _row_number)"
    ).fetchone()
    assert overlap == (0,)


def test_ccn_cores_every_study(real_data: Path, ccn_loaded) -> None:  # type: ignore[no-untyped-def]
    contract = load_registry().latest("ccn_cores")
    files = _study_files(real_data, "cores")
    conn, results, _ = ccn_loaded
    for path in files:
        result = results[path.name]
        assert result.rows_in == pl.read_csv(path, infer_schema=False).height, path.name
        assert result.rows_curated + result.rows_quarantined == result.rows_in, path.name

    rejected = {n for n, r in results.items() if r.errors}
    assert rejected == {p.name for p in files if _missing_required(p, contract)}
    assert len(rejected) >= 20  # 26 cores files lack position_method or year (measured)

    vocabularies = {
        c.name: [v.value for v in c.allowed_values] for c in contract.columns if c.allowed_values
    }

    def outside(column: str):  # type: ignore[no-untyped-def]
        allowed = vocabularies[column]
        return lambda f: (
            ~pl.col(column).str.strip_chars().is_in(allowed)
            if column in f.columns
            else pl.lit(False)
        )

    expected = _expected(files, rejected, {f"{c}.allowed_values": outside(c) for c in vocabularies})
    assert expected["salinity_class.allowed_values"], "real studies use uncontrolled classes"
    for rule_id, rows in expected.items():
        assert _flagged(conn, "ccn_cores_quarantine", rule_id) == rows, rule_id
    # The uncontrolled values found are the ones the curators list (e.g. 'deltaic').
    values = {
        v
        for (v,) in conn.execute(
            "SELECT DISTINCT value_provided FROM ccn_cores_quarantine "
            "WHERE rule_id = 'salinity_class.allowed_values'"
        ).fetchall()
    }
    assert "deltaic" in values


def test_ccn_depthseries_must_reference_cores_of_the_same_study(  # type: ignore[no-untyped-def]
    real_data: Path, ccn_loaded
) -> None:
    """The cross-dataset rule finds exactly the depth intervals whose core is not curated.

    Expected rows come from plain polars: every depthseries row (of a file that was not
    rejected, that no row rule quarantined) whose (study_id, core_id) is not a curated core.
    """
    conn, _, depths = ccn_loaded
    rule = "ccn_depthseries.core_exists"
    cores = {(s, c) for s, c in conn.execute("SELECT study_id, core_id FROM ccn_cores").fetchall()}
    row_rules = {
        (f, int(r))
        for f, r in conn.execute(
            "SELECT _file, _row_number FROM ccn_depthseries_quarantine "
            "WHERE rule_id <> ? AND severity = 'fatal' AND _row_number IS NOT NULL",
            [rule],
        ).fetchall()
    }
    expected: set[tuple[str, int]] = set()
    for path in _study_files(real_data, "depthseries"):
        if depths[path.name].errors:
            continue
        frame = _read(path).select(
            "row",
            pl.col("study_id").str.strip_chars(),
            pl.col("core_id").str.strip_chars(),
        )
        for row, study, core in frame.iter_rows():
            key_present = study is not None and core is not None
            if key_present and (path.name, row) not in row_rules and (study, core) not in cores:
                expected.add((path.name, row))
    found = _flagged(conn, "ccn_depthseries_quarantine", rule)
    assert expected, "real studies deliver depth intervals whose cores were rejected"
    assert len(found - expected) == 0, sorted(found - expected)[:5]
    assert len(expected - found) == 0, sorted(expected - found)[:5]
    # Both sides' values: the keys provided and how many cores the study has.
    sample = conn.execute(
        "SELECT value_provided, expected FROM ccn_depthseries_quarantine WHERE rule_id = ? LIMIT 1",
        [rule],
    ).fetchall()[0]
    assert sample[0].startswith("study_id=") and ", core_id=" in sample[0]
    assert "ccn_cores rows share study_id" in sample[1]
    # Nothing lost, now that the rule moved rows from curated to quarantine.
    for name, result in depths.items():
        assert result.rows_curated + result.rows_quarantined == result.rows_in, name
