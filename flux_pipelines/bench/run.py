"""``flux bench``: figures, not a timed test.

Each measurement runs in its own process so its wall time and peak memory (ru_maxrss) are
its own. Figures printed:
- raw DuckDB ``read_csv`` into a table in a file database (the baseline) and Flux's
  validate + split + load of the same file (raw, curated, quarantine, warnings, uniqueness,
  deliveries log, one transaction), in alternating pairs of fresh processes (A B A B), both
  on DuckDB connections opened by the warehouse resource (one set of settings, printed);
  rows/s and the ratio to the baseline,
- a small delivery's whole partition run through Dagster from a fresh process, on an
  instance prepared like every ``flux`` command's (SQLite unless DAGSTER_PG_HOST is set),
- peak memory of Flux on two file sizes, to show it does not grow with the file,
- definitions load time and a small run against registry size (``definitions.py``),
- backfills through Dagster: a year for one agency, and several agencies in parallel
  (``backfill.py``).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import typer

from flux_pipelines.bench.memory import peak_rss_mb
from flux_pipelines.bench.process import run_python
from flux_pipelines.contracts.loader import load_contract
from flux_pipelines.resources.warehouse import FluxWarehouse
from flux_pipelines.sql import literal, scalar

if TYPE_CHECKING:
    from flux_pipelines.bench.definitions import ProcessFigures

BENCH_CONTRACT = Path(__file__).with_name("bench_events.odcs.yaml")
DAY = dt.date(2026, 1, 5)
PAIRS = 5  # baseline / Flux pairs of fresh processes (median of each side)
PARTITION_ROWS = 500  # about, the small partition's delivery
WIDE_ROWS = 250_000  # the USAspending transaction shape (contract_transactions): 60+ columns
BAD_SHARE = 0.10  # the bad-rows file: 10% of its rows planted defective
EXTRA_PAIRS = 3
TARGET_RATIO = 1.0


def _peak_rss_mb() -> float:
    return peak_rss_mb()


def ensure_file(
    workdir: Path, rows: int, *, contract: Path = BENCH_CONTRACT, defect_rate: float = 0.02
) -> Path:
    """Generate (once) a seeded delivery of ``rows`` rows of ``contract`` with
    ``defect_rate`` planted defects."""
    from flux_pipelines.demo.generator import write_large_csv

    loaded = load_contract(contract)
    path = workdir / f"{loaded.dataset}_{rows}_{round(defect_rate * 100)}pct.csv"
    if not path.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        write_large_csv(loaded, path, rows, seed=7, defect_rate=defect_rate)
        typer.echo(
            f"generated {path.name} ({path.stat().st_size / 1e6:.0f} MB) in "
            f"{time.perf_counter() - started:.1f}s"
        )
    return path


# The DuckDB settings both sides report: Flux's load path sets them (FluxWarehouse._open).
SETTINGS = ("threads", "memory_limit", "preserve_insertion_order")


def bench_warehouse(home: Path, threads: int) -> FluxWarehouse:
    """The warehouse resource both sides open their DuckDB file through, so the baseline
    and Flux run with one set of settings: Flux's (memory limit and insertion order from
    the resource's defaults, as the pipeline runs)."""
    return FluxWarehouse(home=str(home), threads=threads)


def connection_settings(conn: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """The settings a connection really runs with, read back from DuckDB."""
    rows = conn.execute(
        "SELECT name, value FROM duckdb_settings() WHERE name IN (SELECT unnest(?))",
        [list(SETTINGS)],
    ).fetchall()
    return dict(sorted(rows))


def measure_baseline(csv: Path, threads: int, as_text: bool = False) -> dict[str, Any]:
    """Bare DuckDB: ``read_csv`` into a table of a file database (``as_text``: every column
    VARCHAR, for files whose defects stop DuckDB's typed read, which has no quarantine)."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        bench_warehouse(Path(tmp), threads).connect("baseline") as conn,
    ):
        settings = connection_settings(conn)
        started = time.perf_counter()
        options = ", all_varchar = true" if as_text else ""
        conn.execute(f"CREATE TABLE t AS SELECT * FROM read_csv({literal(csv)}{options})")
        rows = scalar(conn, "SELECT count(*) FROM t")
        elapsed = time.perf_counter() - started
    return {"seconds": elapsed, "rows": rows, "peak_rss_mb": _peak_rss_mb(), "settings": settings}


def measure_ceiling(
    csv: Path, threads: int, contract_path: Path = BENCH_CONTRACT, *, raw_copy: bool = True
) -> dict[str, Any]:
    """The least any loader that keeps Flux's zones can do, by DuckDB alone: read the
    file's text once into a temporary table, write the raw copy (Parquet of the delivered
    text) and the typed curated table from it, validating nothing and quarantining nothing.

    Flux's path does all of this and more (hash, every rule, reasons), so the ratio of this
    run to the bare load bounds Flux's ratio from above on these settings. Without
    ``raw_copy``: the text read straight into the typed table, the bound for a loader whose
    raw zone were the delivered file itself."""
    from flux_pipelines.contracts.logical_types import type_row
    from flux_pipelines.sql import quote

    contract = load_contract(contract_path)
    names = contract.column_names
    text_columns = "{" + ", ".join(f"{literal(n)}: 'VARCHAR'" for n in names) + "}"
    typed = ", ".join(
        f"TRY_CAST(nullif(trim({quote(c.name)}), '') AS {type_row(c.logical_type).duckdb}) "
        f"AS {quote(c.name)}"
        for c in contract.columns
    )
    with (
        tempfile.TemporaryDirectory() as tmp,
        bench_warehouse(Path(tmp), threads).connect("ceiling") as conn,
    ):
        settings = connection_settings(conn)
        raw = literal(Path(tmp) / "raw.parquet")
        started = time.perf_counter()
        text = (
            f"read_csv({literal(csv)}, columns = {text_columns}, header = true, "
            "auto_detect = false)"
        )
        if raw_copy:
            conn.execute(f"CREATE TEMP TABLE delivered AS SELECT * FROM {text}")
            conn.execute(f"COPY delivered TO {raw} (FORMAT parquet, COMPRESSION lz4)")
            text = "delivered"
        conn.execute(f"CREATE TABLE curated AS SELECT {typed} FROM {text}")
        rows = scalar(conn, "SELECT count(*) FROM curated")
        elapsed = time.perf_counter() - started
    return {"seconds": elapsed, "rows": rows, "peak_rss_mb": _peak_rss_mb(), "settings": settings}


def measure_flux(csv: Path, threads: int, contract_path: Path = BENCH_CONTRACT) -> dict[str, Any]:
    """Flux's load path: hash, validate, split, load raw + curated + quarantine, one
    transaction, on a connection opened the way the pipeline opens it."""
    from flux_pipelines.ingest.delivery import PartitionLoader, load_partition

    contract = load_contract(contract_path)
    with tempfile.TemporaryDirectory() as tmp:
        warehouse = bench_warehouse(Path(tmp), threads)
        with warehouse.connect("bench") as conn:
            settings = connection_settings(conn)
            started = time.perf_counter()
            loader = PartitionLoader(
                conn,
                agency="bench",
                contract=contract,
                day=DAY,
                run_id="bench",
                raw_root=warehouse.raw_root("bench", contract.dataset),
            )
            result = load_partition(loader, [csv])
            elapsed = time.perf_counter() - started
    return {
        "seconds": elapsed,
        "rows": result.rows_in,
        "curated": result.rows_curated,
        "quarantined": result.rows_quarantined,
        "peak_rss_mb": _peak_rss_mb(),
        "settings": settings,
    }


def measure_partition_run(workdir: Path) -> tuple[str, dict[str, ProcessFigures]]:
    """A small partition through Dagster from a fresh interpreter (import, definitions,
    run, storage writes), on a new instance prepared the way every ``flux`` command does
    (``prepare_dagster_home``: embedded SQLite unless DAGSTER_PG_HOST is set)."""
    from flux_pipelines.bench.backfill import flux_home
    from flux_pipelines.bench.definitions import land_small_delivery, run_partition_process
    from flux_pipelines.instance.config import postgres_configured

    home = workdir / "partition_run"
    shutil.rmtree(home, ignore_errors=True)
    land_small_delivery(home, rows=PARTITION_ROWS)
    storage = "PostgreSQL (DAGSTER_PG_HOST)" if postgres_configured() else "SQLite"
    # The first run on a new DAGSTER_HOME also creates the SQLite schema and the agency
    # file; later runs (the daily case) reuse them. Both are measured.
    with flux_home(home) as env:
        return storage, {label: run_partition_process(env) for label in ("first", "next")}


def _child(kind: str, csv: Path, threads: int, contract: Path = BENCH_CONTRACT) -> dict[str, Any]:
    """One measurement in a fresh process (its wall time and peak memory are its own);
    ``kind``: baseline, baseline-text (every column as text) or flux."""
    reply, _ = run_python(
        ["-m", "flux_pipelines.bench.run", kind, str(csv), str(threads), str(contract)],
        what=f"bench process {kind}",
    )
    return reply


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda r: r["seconds"])
    return ordered[len(ordered) // 2]


def paired_runs(
    csv: Path,
    threads: int,
    pairs: int,
    contract: Path = BENCH_CONTRACT,
    baseline: str = "baseline",
    other: str = "flux",
) -> tuple[dict[str, Any], dict[str, Any], list[tuple[float, float]]]:
    """Baseline and ``other`` (Flux) alternated (A B A B ...), each run in a fresh process;
    returns the median run of each side (by time) and every pair's seconds."""
    base_runs, flux_runs = [], []
    for _ in range(pairs):
        base_runs.append(_child(baseline, csv, threads, contract))
        flux_runs.append(_child(other, csv, threads, contract))
    seconds = [(b["seconds"], f["seconds"]) for b, f in zip(base_runs, flux_runs, strict=True)]
    return _median_run(base_runs), _median_run(flux_runs), seconds


def run_bench(
    *,
    rows: int,
    workdir: Path,
    big_gb: float,
    threads: int = 2,
    pairs: int = PAIRS,
    backfill_days: int = 0,
    backfill_multi_days: int = 0,
    only: str = "all",
) -> list[str]:
    """Run the parts ``only`` names (all | throughput | definitions | backfill | monitors |
    risk | linking).

    Returns backfill problems.
    """
    if only in ("all", "throughput"):
        run_throughput_bench(
            rows=rows, workdir=workdir, big_gb=big_gb, threads=threads, pairs=pairs
        )
    if only in ("all", "definitions"):
        from flux_pipelines.bench.definitions import run_definitions_bench

        for line in run_definitions_bench(workdir):
            typer.echo(line)
    if only in ("all", "monitors"):
        from flux_pipelines.bench.monitors import run_monitor_bench

        for line in run_monitor_bench(workdir):
            typer.echo(line)
    if only in ("all", "risk"):
        from flux_pipelines.bench.risk import run_risk_bench

        for line in run_risk_bench(workdir):
            typer.echo(line)
    if only in ("all", "linking"):
        from flux_pipelines.bench.linking import run_linking_bench

        for line in run_linking_bench(workdir):
            typer.echo(line)
    if only not in ("all", "backfill"):
        return []
    from flux_pipelines.bench.backfill import run_backfill_bench

    return run_backfill_bench(workdir, days=backfill_days, multi_days=backfill_multi_days)


def _settings_text(settings: dict[str, str]) -> str:
    return ", ".join(f"{name}={value}" for name, value in settings.items())


def run_throughput_bench(
    *, rows: int, workdir: Path, big_gb: float, threads: int = 2, pairs: int = PAIRS
) -> None:
    csv = ensure_file(workdir, rows)
    base, flux, seconds = paired_runs(csv, threads, pairs)
    base_rps = base["rows"] / base["seconds"]
    flux_rps = flux["rows"] / flux["seconds"]
    typer.echo(
        f"\nmedian of {pairs} pairs of fresh processes, run alternately (baseline, Flux, "
        f"baseline, Flux, ...); file: {csv.name}, {rows:,} rows x 10 columns, "
        f"{csv.stat().st_size / 1e6:.0f} MB; both sides open their DuckDB file through "
        "FluxWarehouse.connect (the pipeline's load path)"
    )
    typer.echo(f"DuckDB settings, baseline: {_settings_text(base['settings'])}")
    typer.echo(f"DuckDB settings, Flux:     {_settings_text(flux['settings'])}")
    typer.echo(f"settings equal: {'yes' if base['settings'] == flux['settings'] else 'NO'}")
    typer.echo(f"{'path':<46} {'seconds':>8} {'rows/s':>12} {'peak MB':>8}")
    typer.echo(
        f"{'DuckDB read_csv -> table (baseline)':<46} {base['seconds']:>8.2f} "
        f"{base_rps:>12,.0f} {base['peak_rss_mb']:>8.0f}"
    )
    typer.echo(
        f"{'Flux validate + split + load (raw+curated+q)':<46} {flux['seconds']:>8.2f} "
        f"{flux_rps:>12,.0f} {flux['peak_rss_mb']:>8.0f}"
    )
    pair_ratios = [b / f for b, f in seconds]
    typer.echo(
        "pairs (baseline s / Flux s): "
        + ", ".join(f"{b:.2f}/{f:.2f}" for b, f in seconds)
        + f"; per-pair ratio {min(pair_ratios):.2f}-{max(pair_ratios):.2f}x, "
        f"median {statistics.median(pair_ratios):.2f}x"
    )
    typer.echo(
        f"ratio Flux / DuckDB (medians): {flux_rps / base_rps:.2f}x  (target >= "
        f"{TARGET_RATIO:.1f}x: {'met' if flux_rps / base_rps >= TARGET_RATIO else 'NOT met'}); "
        f"peak memory {flux['peak_rss_mb'] / base['peak_rss_mb']:.2f}x the baseline's "
        f"(target <= 1.5x); curated {flux['curated']:,}, quarantined {flux['quarantined']:,}"
    )
    for line in ceiling_lines(csv, threads):
        typer.echo(line)
    for line in other_files(workdir, rows, threads):
        typer.echo(line)
    storage, run = measure_partition_run(workdir)
    for label, name in (("first", "first run, new instance"), ("next", "next run")):
        r = run[label]
        typer.echo(
            f"small partition (nasa/meteorites, ~{PARTITION_ROWS} rows) through Dagster, "
            f"{storage} instance, fresh process, {name}: {r.wall_seconds:.2f}s wall "
            f"(import dagster {r.import_dagster_seconds:.2f}s, definitions "
            f"{r.definitions_seconds:.2f}s; target <= 5s; success={r.run_success})"
        )
    if big_gb > 0:
        big_rows = int(big_gb * 1e9 / (csv.stat().st_size / rows))
        big = ensure_file(workdir, big_rows)
        big_flux = _child("flux", big, threads)
        typer.echo(
            f"large file: {big.stat().st_size / 1e9:.2f} GB, {big_rows:,} rows: "
            f"{big_flux['seconds']:.1f}s, {big_flux['rows'] / big_flux['seconds']:,.0f} rows/s, "
            f"peak {big_flux['peak_rss_mb']:.0f} MB (vs {flux['peak_rss_mb']:.0f} MB at "
            f"{csv.stat().st_size / 1e9:.2f} GB)"
        )


def ceiling_lines(csv: Path, threads: int) -> list[str]:
    """The bounds no loader keeping Flux's zones can pass (``measure_ceiling``), against the
    bare load, median of ``EXTRA_PAIRS`` pairs each."""
    lines = []
    for kind, what in (
        ("ceiling", "text read once, raw Parquet + typed table written"),
        ("ceiling-typed", "text read straight into the typed table, no raw copy"),
    ):
        base, ceiling, _ = paired_runs(csv, threads, EXTRA_PAIRS, other=kind)
        lines.append(
            f"ceiling, DuckDB alone validating nothing ({what}; median of {EXTRA_PAIRS} "
            f"pairs): {ceiling['seconds']:.2f}s vs {base['seconds']:.2f}s bare, "
            f"{base['seconds'] / ceiling['seconds']:.2f}x, peak {ceiling['peak_rss_mb']:.0f} MB"
        )
    return lines


def other_files(workdir: Path, rows: int, threads: int) -> list[str]:
    """The same comparison on a wide file (the USAspending transaction shape) and on the
    benchmark file's contract with 10% bad rows, median of ``EXTRA_PAIRS`` pairs each."""
    from flux_pipelines.contracts.registry import load_registry

    wide_contract = Path(load_registry().latest("contract_transactions").source_path)
    files = [
        ("wide", ensure_file(workdir, WIDE_ROWS, contract=wide_contract), wide_contract),
        (
            f"{BAD_SHARE:.0%} bad rows",
            ensure_file(workdir, rows, defect_rate=BAD_SHARE),
            BENCH_CONTRACT,
        ),
    ]
    lines = [
        f"other files (median of {EXTRA_PAIRS} pairs, same settings; their defects stop "
        "DuckDB's typed read, so its baseline reads every column as text: all_varchar):"
    ]
    for label, csv, contract in files:
        base, flux, _ = paired_runs(csv, threads, EXTRA_PAIRS, contract, "baseline-text")
        columns = len(load_contract(contract).columns)
        ratio = (flux["rows"] / flux["seconds"]) / (base["rows"] / base["seconds"])
        lines.append(
            f"  {label:<14} {csv.name} ({flux['rows']:,} rows x {columns} columns, "
            f"{csv.stat().st_size / 1e6:.0f} MB): DuckDB {base['seconds']:.2f}s "
            f"{base['peak_rss_mb']:.0f} MB, Flux {flux['seconds']:.2f}s "
            f"{flux['peak_rss_mb']:.0f} MB, ratio {ratio:.2f}x; quarantined "
            f"{flux['quarantined']:,}"
        )
    return lines


if __name__ == "__main__":
    kind, path, n_threads = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    contract_file = Path(sys.argv[4]) if len(sys.argv) > 4 else BENCH_CONTRACT
    if kind == "flux":
        figures = measure_flux(path, n_threads, contract_file)
    elif kind.startswith("ceiling"):
        figures = measure_ceiling(path, n_threads, contract_file, raw_copy=kind == "ceiling")
    else:
        figures = measure_baseline(path, n_threads, as_text=kind == "baseline-text")
    print(json.dumps(figures))
