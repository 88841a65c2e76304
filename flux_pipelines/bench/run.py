"""``flux bench``: figures, not a timed test.

Each measurement runs in its own process so its wall time and peak memory (ru_maxrss) are
its own. Figures printed:
- raw DuckDB ``read_csv`` into a table in a file database (the baseline),
- Flux validate + split + load of the same file (raw, curated, quarantine, warnings,
  uniqueness, deliveries log, one transaction), rows/s and the ratio to the baseline,
- a small delivery's whole partition run through Dagster from a fresh process,
- peak memory of Flux on two file sizes, to show it does not grow with the file,
- backfills through Dagster: a year for one agency, and several agencies in parallel
  (``backfill.py``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import typer

from flux_pipelines.contracts.loader import load_contract
from flux_pipelines.contracts.registry import PROJECT_ROOT

BENCH_CONTRACT = Path(__file__).with_name("bench_events.odcs.yaml")
DAY = dt.date(2026, 1, 5)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ensure_file(workdir: Path, rows: int) -> Path:
    """Generate (once) a seeded delivery of ``rows`` rows with 2% planted defects."""
    from flux_pipelines.demo.generator import write_large_csv

    path = workdir / f"bench_events_{rows}.csv"
    if not path.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        write_large_csv(load_contract(BENCH_CONTRACT), path, rows, seed=7)
        typer.echo(
            f"generated {path.name} ({path.stat().st_size / 1e6:.0f} MB) in "
            f"{time.perf_counter() - started:.1f}s"
        )
    return path


def measure_baseline(csv: Path, threads: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        conn = duckdb.connect(str(Path(tmp) / "baseline.duckdb"), config={"threads": str(threads)})
        started = time.perf_counter()
        conn.execute(f"CREATE TABLE t AS SELECT * FROM read_csv('{csv}')")
        rows = conn.execute("SELECT count(*) FROM t").fetchone()[0]  # type: ignore[index]
        elapsed = time.perf_counter() - started
        conn.close()
    return {"seconds": elapsed, "rows": rows, "peak_rss_mb": _peak_rss_mb()}


def measure_flux(csv: Path, threads: int) -> dict[str, float]:
    from flux_pipelines.ingest.delivery import PartitionLoader, load_partition

    contract = load_contract(BENCH_CONTRACT)
    with tempfile.TemporaryDirectory() as tmp:
        config = {
            "threads": str(threads),
            "memory_limit": "1GB",
            "preserve_insertion_order": "false",
        }
        conn = duckdb.connect(str(Path(tmp) / "flux.duckdb"), config=config)
        started = time.perf_counter()
        loader = PartitionLoader(
            conn,
            agency="bench",
            contract=contract,
            day=DAY,
            run_id="bench",
            raw_root=Path(tmp) / "raw",
        )
        result = load_partition(loader, [csv])
        elapsed = time.perf_counter() - started
        conn.close()
    return {
        "seconds": elapsed,
        "rows": result.rows_in,
        "curated": result.rows_curated,
        "quarantined": result.rows_quarantined,
        "peak_rss_mb": _peak_rss_mb(),
    }


def measure_partition_run(workdir: Path) -> dict[str, float]:
    """Whole partition through Dagster (in-process executor, SQLite instance) from a fresh
    interpreter: import, definitions load, run, storage writes."""
    code = (
        "import time,sys; t=time.perf_counter();"
        "import dagster as dg;"
        "from flux_pipelines.definitions import defs;"
        "r=defs.resolve_job_def('ingest_nasa').execute_in_process("
        "instance=dg.DagsterInstance.get(), partition_key='2026-01-05');"
        "print(r.success, time.perf_counter()-t)"
    )
    home = workdir / "partition_run"
    shutil.rmtree(home, ignore_errors=True)
    landing = home / "landing" / "nasa" / "meteorites" / "2026-01-05"
    landing.mkdir(parents=True, exist_ok=True)
    from flux_pipelines.contracts.registry import load_registry
    from flux_pipelines.demo.generator import generate_rows, write_delivery

    contract = load_registry().latest("meteorites")
    write_delivery(generate_rows(contract, 500, seed=1).frame, landing / "m.csv", "csv")
    dagster_home = home / "dagster_home"
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    env = {**os.environ, "FLUX_HOME": str(home), "DAGSTER_HOME": str(dagster_home)}
    figures: dict[str, float] = {}
    # The first run on a new DAGSTER_HOME also creates the SQLite schema; later runs (the
    # daily case) reuse it. Both are measured, each from a fresh interpreter.
    for label in ("first_run", "steady_run"):
        started = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        figures[f"{label}_wall"] = time.perf_counter() - started
        success, inner = out.stdout.strip().splitlines()[-1].split()
        figures[f"{label}_after_start"] = float(inner)
        figures[f"{label}_success"] = success == "True"
    return figures


def _child(kind: str, csv: Path, threads: int, repeat: int = 3) -> dict[str, float]:
    """Median (by time) of ``repeat`` runs, each in a fresh process (as STACK_NOTES does)."""
    runs = []
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, "-m", "flux_pipelines.bench.run", kind, str(csv), str(threads)],
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    runs.sort(key=lambda r: r["seconds"])
    return runs[len(runs) // 2]


def run_bench(
    *,
    rows: int,
    workdir: Path,
    big_gb: float,
    threads: int = 2,
    backfill_days: int = 0,
    backfill_multi_days: int = 0,
    only: str = "all",
) -> list[str]:
    """Run the parts ``only`` names (all | throughput | backfill | monitors | risk | linking).

    Returns backfill problems.
    """
    if only in ("all", "throughput"):
        run_throughput_bench(rows=rows, workdir=workdir, big_gb=big_gb, threads=threads)
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


def run_throughput_bench(*, rows: int, workdir: Path, big_gb: float, threads: int = 2) -> None:
    csv = ensure_file(workdir, rows)
    base = _child("baseline", csv, threads)
    flux = _child("flux", csv, threads)
    base_rps = base["rows"] / base["seconds"]
    flux_rps = flux["rows"] / flux["seconds"]
    typer.echo(
        f"\nmedian of 3 runs, each in a fresh process; file: {csv.name}, "
        f"{rows:,} rows x 10 columns, "
        f"{csv.stat().st_size / 1e6:.0f} MB, {threads} threads"
    )
    typer.echo(f"{'path':<46} {'seconds':>8} {'rows/s':>12} {'peak MB':>8}")
    typer.echo(
        f"{'DuckDB read_csv -> table (baseline)':<46} {base['seconds']:>8.2f} "
        f"{base_rps:>12,.0f} {base['peak_rss_mb']:>8.0f}"
    )
    typer.echo(
        f"{'Flux validate + split + load (raw+curated+q)':<46} {flux['seconds']:>8.2f} "
        f"{flux_rps:>12,.0f} {flux['peak_rss_mb']:>8.0f}"
    )
    typer.echo(
        f"ratio Flux / DuckDB: {flux_rps / base_rps:.2f}x  (target >= 0.80x); "
        f"curated {flux['curated']:,}, quarantined {flux['quarantined']:,}"
    )
    run = measure_partition_run(workdir)
    for label, name in (("first_run", "first run, new instance"), ("steady_run", "next run")):
        typer.echo(
            f"small partition (500 rows) through Dagster, fresh process, {name}: "
            f"{run[f'{label}_wall']:.2f}s wall ({run[f'{label}_after_start']:.2f}s after "
            f"interpreter start; target <= 5s; success={bool(run[f'{label}_success'])})"
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


if __name__ == "__main__":
    kind, path, n_threads = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    figures = (
        measure_baseline(path, n_threads) if kind == "baseline" else measure_flux(path, n_threads)
    )
    print(json.dumps(figures))
