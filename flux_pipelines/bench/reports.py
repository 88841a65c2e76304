"""Time the agency report for a delivery with many quarantined rows.

``uv run python -m flux_pipelines.bench.reports [--rows 1000000]``: builds an agency file
whose quarantine table holds ``rows`` violations of one day (generated in DuckDB: half the
rows carry a flex column, one in ten a value starting with '-', one in seven a warning),
30 earlier delivery days, then times ``write_delivery_report`` in a fresh process so the
peak memory is the report's own.
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from flux_pipelines.bench.memory import peak_rss_mb, reset_peak
from flux_pipelines.bench.run import BENCH_CONTRACT
from flux_pipelines.contracts.loader import load_contract
from flux_pipelines.contracts.model import Contract
from flux_pipelines.reports import write_delivery_report
from flux_pipelines.resources.warehouse import ensure_tables

DAY = dt.date(2026, 1, 5)
HISTORY_DAYS = 30


def build(path: Path, contract: Contract, rows: int) -> None:
    """An agency file with ``rows`` violation lines on DAY and HISTORY_DAYS earlier days."""
    conn = duckdb.connect(str(path))
    try:
        ensure_tables(conn, contract)
        quarantine = f"{contract.dataset}_quarantine"
        conn.execute(
            f"""INSERT INTO {quarantine} BY NAME SELECT
              DATE '{DAY}' AS _partition_date, 'part-' || (i % 4) || '.csv' AS _file,
              i AS _row_number, ['a.rule', 'b.rule', 'c.rule', 'd.rule'][1 + i % 4] AS rule_id,
              ['a', 'b', 'c', 'd'][1 + i % 4] AS field,
              CASE WHEN i % 10 = 0 THEN '-' || i ELSE 'value ' || i END AS value_provided,
              'one of: x, y' AS expected,
              CASE WHEN i % 7 = 0 THEN 'warning' ELSE 'fatal' END AS severity,
              'accuracy' AS category, 'the value is not allowed' AS message,
              'id=' || i AS unique_id,
              CASE WHEN i % 2 = 0
                THEN '{{"id":"' || i || '","_unmapped":{{"flex_a":"a' || i || '","x":"o"}}}}'
                ELSE '{{"id":"' || i || '"}}' END AS original_row,
              'sha' AS _file_sha256, 'bench' AS _contract_id, '1.0.0' AS _contract_version,
              'run' AS _run_id, now()::TIMESTAMP AS _loaded_at
            FROM range({rows}) r(i)"""
        ).fetchall()
        conn.execute(
            f"""INSERT INTO _flux_deliveries BY NAME SELECT
              '{contract.dataset}' AS dataset, DATE '{DAY}' - d::INTEGER AS _partition_date,
              'part.csv' AS file, 'loaded' AS status, {rows} + d * 1000 AS rows_read,
              {rows} AS rows_curated, d * 100 AS rows_quarantined, 0 AS rows_with_warnings,
              '1.0.0' AS contract_version, 'run' AS run_id, now()::TIMESTAMP AS loaded_at
            FROM range(0, {HISTORY_DAYS + 1}) r(d)"""
        ).fetchall()
    finally:
        conn.close()


def measure(path: Path, outbox: Path) -> None:
    """Write the report once (warm-up) then time it; print seconds and peak memory."""
    reset_peak()
    contract = load_contract(BENCH_CONTRACT)
    conn = duckdb.connect(str(path))
    try:
        timings = []
        for _ in range(3):
            start = time.perf_counter()
            report = write_delivery_report(
                conn, agency="bench", contract=contract, day=DAY, outbox_root=outbox
            )
            timings.append(time.perf_counter() - start)
    finally:
        conn.close()
    peak_mb = peak_rss_mb()
    size_mb = report.error_report.stat().st_size / 1e6
    print(
        f"report for {report.errors + report.warnings:,} violation lines "
        f"({report.errors:,} errors, {report.warnings:,} warnings): "
        f"{', '.join(f'{t:.2f}' for t in timings)} s; error CSV {size_mb:.0f} MB; "
        f"peak RSS {peak_mb:.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure, args.measure.parent / "outbox")
        return
    with tempfile.TemporaryDirectory(prefix="flux-bench-reports-") as scratch:
        path = Path(scratch) / "agency.duckdb"
        build(path, load_contract(BENCH_CONTRACT), args.rows)
        subprocess.run(
            [sys.executable, "-m", "flux_pipelines.bench.reports", "--measure", str(path)],
            check=True,
        )


if __name__ == "__main__":
    main()
