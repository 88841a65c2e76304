"""``flux demo``: seeded deliveries with defects, loaded through Dagster, then a summary.

Runs go through a persistent Dagster instance (SQLite under <home>/dagster_home), one run
per agency covering every demo day (a single-run backfill), so `dagster dev` afterwards
shows the runs, materializations, check results and metadata plots. Every load writes its
delivery receipts, so the landing sensors of a later `flux dev` do not load the demo's
deliveries again. At the end the daily refresh runs once (as its 19:00 schedule would), so
the analysts' catalogs exist straight away.
"""

from __future__ import annotations

import datetime as dt
import functools
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import duckdb
import typer

from flux_pipelines.contracts.ddl import DELIVERIES_TABLE, DatasetTables
from flux_pipelines.contracts.registry import Registry, load_registry
from flux_pipelines.defs.ingest.jobs import QUIET_LOGS
from flux_pipelines.defs.published.catalogs import CATALOG_FILE
from flux_pipelines.defs.published.cross_agency import GROUP as CROSS_AGENCY
from flux_pipelines.defs.spending.risk import delivers_risk
from flux_pipelines.demo.runs import materialize_agencies, run_range
from flux_pipelines.errors import ConfigurationError
from flux_pipelines.instance.config import prepare_dagster_home
from flux_pipelines.names import agency_db
from flux_pipelines.sql import quote


def run_demo(
    *, home: Path, agencies: list[str], first_day: dt.date, days: int, seed: int, rows: int
) -> None:
    registry = load_registry()
    for agency in agencies:
        registry.agency(agency)  # unknown ids fail here, with the list of known ones
    instance = prepare_dagster_home(home)
    typer.echo(instance.describe())
    from flux_pipelines.demo.generator import generate_landing

    day_list = [first_day + dt.timedelta(days=i) for i in range(days)]
    started = time.perf_counter()
    files = generate_landing(
        home / "landing",
        registry,
        agencies=agencies,
        days=day_list,
        seed=seed,
        rows_per_delivery=rows,
    )
    typer.echo(
        f"generated {len(files)} deliveries in {time.perf_counter() - started:.1f}s "
        f"under {home / 'landing'}"
    )
    failed = materialize_agencies(agencies, day_list)
    print_summary(home, agencies, registry)
    spenders = [a for a in agencies if delivers_risk(registry.agency(a))]
    if spenders:
        failed += score_risk(spenders, day_list)
        print_risk_summary(home, spenders)
    failed += refresh_catalogs(home, agencies)
    first = registry.agency(agencies[0])
    catalog = home / "published" / first.id / CATALOG_FILE
    typer.echo(
        "\nOpen the UI (webserver + daemon with sensors and schedules on 127.0.0.1:3000):\n"
        f"  uv run flux dev --home {home}\n"
        f"Query the data (read-only catalogs of the published copies):\n"
        f"  uv run python -c \"import duckdb; print(duckdb.connect('{catalog}', "
        f"read_only=True).sql('SELECT * FROM {first.datasets[0]} LIMIT 5'))\""
    )
    if failed:
        typer.echo(
            f"\n{len(failed)} run(s) failed or reported rejected files: {', '.join(failed)} "
            "(see the quarantine tables and the runs in the UI; other agencies were unaffected)"
        )


def refresh_catalogs(home: Path, agencies: list[str]) -> list[str]:
    """Run the daily refresh once (catalogs, reconciliations, cross-agency outputs) and say
    where the analysts' catalogs are; returns a label when the run failed."""
    from flux_pipelines.definitions import defs
    from flux_pipelines.defs.published.refresh import DAILY_REFRESH_JOB

    started = time.perf_counter()
    result = defs.resolve_job_def(DAILY_REFRESH_JOB).execute_in_process(
        instance=dg.DagsterInstance.get(),
        run_config=QUIET_LOGS,
        tags={"flux/source": "flux demo"},
        raise_on_error=False,
    )
    status = "ok" if result.success else "FAILED"
    typer.echo(
        f"run {result.run_id[:8]} {'daily refresh':<20} catalogs, reconciliations, "
        f"cross-agency outputs {time.perf_counter() - started:5.1f}s {status}"
    )
    typer.echo("\nAnalysts' catalogs (read-only DuckDB files, a view per published table):")
    for owner in [*agencies, CROSS_AGENCY]:
        path = home / "published" / owner / CATALOG_FILE
        if not path.exists():
            typer.echo(f"  {path}: missing")
            continue
        with duckdb.connect(str(path), read_only=True) as conn:
            views = [v for (v,) in conn.execute(
                "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1"
            ).fetchall()]  # fmt: skip
        typer.echo(f"  {path}: {', '.join(views) or 'no views yet'}")
    return [] if result.success else ["daily refresh"]


def score_risk(agencies: list[str], days: list[dt.date]) -> list[str]:
    """Per agency, score every day (rules only: no model yet), then score the last day
    again: that step first trains the model (due: none yet) and blends it in; returns a
    label per failed run."""
    from flux_pipelines.definitions import defs
    from flux_pipelines.defs.spending.jobs import risk_job_name

    registry = load_registry()
    failed: list[str] = []
    instance = dg.DagsterInstance.get()
    for agency in (registry.agency(a) for a in agencies):
        scoring = defs.resolve_job_def(risk_job_name(agency))
        passes: list[tuple[str, Callable[[], dg.ExecuteInProcessResult], int]] = [
            ("score", functools.partial(run_range, scoring, instance, days), len(days)),
            ("train, blend", functools.partial(run_range, scoring, instance, days[-1:]), 1),
        ]
        for label, run, span in passes:
            started = time.perf_counter()
            result = run()
            status = "ok" if result.success else "FAILED"
            typer.echo(
                f"run {result.run_id[:8]} {agency.id:<20} risk: {label:<15} "
                f"{f'{span} day(s)':<9} "
                f"{time.perf_counter() - started:5.1f}s {status}"
            )
            if not result.success:
                failed.append(f"{agency.id} risk ({label})")
    return failed


def print_risk_summary(home: Path, agencies: list[str]) -> None:
    from flux_pipelines.defs.spending.risk import SCORES

    typer.echo(f"\n{'agency':<20} {'scored':>7} {'flagged':>8}  basis of the last day; top reasons")
    for agency_id in agencies:
        with duckdb.connect(str(agency_db(home, agency_id)), read_only=True) as c:
            scored, flagged = c.execute(
                f"SELECT count(*), count(*) FILTER (flagged) FROM {SCORES}"
            ).fetchall()[0]
            (basis,) = c.execute(
                f"SELECT any_value(score_basis) FROM {SCORES} "
                f"WHERE _partition_date = (SELECT max(_partition_date) FROM {SCORES})"
            ).fetchall()[0]
            top = c.execute(
                f"SELECT r, count(*) n FROM (SELECT unnest(rules_fired) r FROM {SCORES} "
                "WHERE flagged) GROUP BY r ORDER BY n DESC, r LIMIT 3"
            ).fetchall()
        reasons = ", ".join(f"{r} ({n})" for r, n in top) or "-"
        typer.echo(f"{agency_id:<20} {scored:>7} {flagged:>8}  {basis}; {reasons}")


def print_summary(home: Path, agencies: list[str], registry: Registry) -> None:
    typer.echo(
        f"\n{'agency':<20} {'dataset':<22} {'rows in':>8} {'curated':>8} "
        f"{'quarant.':>8} {'reject':>7}  top rules"
    )
    for agency_id in agencies:
        path = agency_db(home, agency_id)
        if not path.exists():
            raise ConfigurationError(f"no warehouse file for {agency_id} at {path}")
        with duckdb.connect(str(path), read_only=True) as conn:
            for dataset in registry.agency(agency_id).datasets:
                totals = conn.execute(
                    f"SELECT coalesce(sum(rows_read), 0), coalesce(sum(rows_curated), 0), "
                    f"coalesce(sum(rows_quarantined), 0) FROM {DELIVERIES_TABLE} WHERE dataset = ?",
                    [dataset],
                ).fetchone()
                assert totals is not None
                rows_in, curated, quarantined = totals
                q = quote(DatasetTables.for_dataset(dataset).quarantine)
                top = conn.execute(
                    f"SELECT rule_id, count(*) n FROM {q} GROUP BY 1 ORDER BY n DESC, 1 LIMIT 3"
                ).fetchall()
                rate = quarantined / rows_in if rows_in else 0.0
                rules = ", ".join(f"{r} ({n})" for r, n in top) or "-"
                typer.echo(
                    f"{agency_id:<20} {dataset:<22} {rows_in:>8} {curated:>8} "
                    f"{quarantined:>8} {rate:>7.1%}  {rules}"
                )
