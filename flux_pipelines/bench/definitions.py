"""``flux bench --only definitions``: what a fresh process pays before and for a small run.

Every Dagster run worker and step process imports Dagster and builds Flux's definitions
before it does any work, and that cost grows with the registry. Measured for the shipped
registry and for larger ones (the shipped ``contracts/`` copied to a scratch folder with
generated agencies appended to its ``agencies.yaml``, read through ``FLUX_CONTRACTS_DIR``),
each figure from a fresh interpreter, median of ``REPEAT``:

- ``import dagster``;
- building the definitions (``from flux_pipelines.definitions import defs`` plus resolving
  the asset graph), and the assets and asset checks it holds;
- whether scikit-learn was imported by then;
- the wall time of the whole process when it then materializes one agency's one dataset
  for one day (a small generated delivery) through Dagster on a temporary SQLite instance.

The same fresh-process run is what ``flux bench --only throughput`` reports as its small
partition (``run_partition_process``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
import yaml

from flux_pipelines.bench.process import run_python
from flux_pipelines.contracts.registry import CONTRACTS_DIR_ENV, load_registry
from flux_pipelines.defs.ingest.jobs import QUIET_LOGS
from flux_pipelines.home import PROJECT_ROOT
from flux_pipelines.instance.config import PG_ENV, instance_config

if TYPE_CHECKING:
    import dagster as dg

SHIPPED_CONTRACTS = PROJECT_ROOT / "contracts"
SIZES = (100, 300)  # registries measured besides the shipped one (agencies in all)
TEMPLATE_DATASETS = ["contract_transactions"]  # generated entries copy the first such agency
GENERATED_DATASETS = ("contract_transactions", "constituents")
RUN_AGENCY = "nasa"  # a shipped agency, so every registry size runs the same partition
RUN_DATASET = "meteorites"
RUN_DAY = dt.date(2026, 1, 5)
RUN_ROWS = 200  # about: "a tiny generated delivery"
SEED = 7
REPEAT = 5
TARGET_AGENCIES = 300
TARGET_DEFINITIONS_SECONDS = 2.0
TARGET_RUN_SECONDS = 4.0

# Runs in a fresh interpreter: time `import dagster` before anything else is imported, then
# the definitions, then hand over to `child_report` (imported last so it costs nothing
# above). argv[1]: "" (definitions only) or "<agency> <dataset> <YYYY-MM-DD>" to also run.
CHILD = """\
import time
_t0 = time.perf_counter()
import dagster
_t1 = time.perf_counter()
from flux_pipelines.definitions import defs
_graph = defs.resolve_asset_graph()
_t2 = time.perf_counter()
import sys
_sklearn = "sklearn" in sys.modules
from flux_pipelines.bench.definitions import child_report
child_report(defs, _graph, _t1 - _t0, _t2 - _t1, _sklearn, sys.argv[1])
"""


# --------------------------------------------------------------------------- registries


def scale_registry(
    target: Path,
    agencies: int | None,
    *,
    source: Path = SHIPPED_CONTRACTS,
    onboarded: Mapping[str, dt.date] | None = None,
) -> tuple[str, ...]:
    """Copy ``source`` (a contracts folder) to ``target`` and append generated agencies to
    its ``agencies.yaml`` until it lists ``agencies`` (None: none added); returns the
    generated ids. ``onboarded`` moves the listed agencies' onboarding day (a benchmark that
    backfills a year needs agencies onboarded a year ago).

    Generated entries copy the first shipped ``spending`` agency (whatever fields it has)
    with a new id, name and source name, and deliver ``GENERATED_DATASETS``.
    """
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    path = target / "agencies.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    entries: list[dict[str, Any]] = document["agencies"]
    for entry in entries:
        if onboarded and entry["id"] in onboarded:
            entry["onboarded"] = onboarded[entry["id"]]
    missing = (agencies if agencies is not None else len(entries)) - len(entries)
    if missing < 0:
        raise ValueError(f"{source} already lists {len(entries)} agencies, more than {agencies}")
    template = next(e for e in entries if e.get("datasets") == TEMPLATE_DATASETS)
    ids = tuple(f"agency-{i:03d}" for i in range(1, missing + 1))
    for n, agency_id in enumerate(ids, start=1):
        entry = {k: v for k, v in template.items() if k != "severity_overrides"}
        name = f"Generated Agency {n:03d}"
        entry.update(id=agency_id, name=name, datasets=list(GENERATED_DATASETS))
        if "source_names" in entry:
            entry["source_names"] = [name]
        entries.append(entry)
    header = f"# {source / 'agencies.yaml'} with {missing} generated agencies (flux bench)\n"
    path.write_text(header + yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return ids


# --------------------------------------------------------------------------- fresh processes


def sqlite_instance_env(home: Path, contracts: Path | None = None) -> dict[str, str]:
    """The environment of a process on a temporary SQLite instance under ``home``: the
    project's instance settings without the ``storage:`` section (``instance_config``)."""
    dagster_home = home / "dagster_home"
    dagster_home.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(instance_config(postgres=False), sort_keys=False)
    (dagster_home / "dagster.yaml").write_text(text, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in PG_ENV}
    env.update(DAGSTER_HOME=str(dagster_home), FLUX_HOME=str(home))
    if contracts is not None:
        env[CONTRACTS_DIR_ENV] = str(contracts)
    return env


def land_small_delivery(
    home: Path, agency: str = RUN_AGENCY, day: dt.date = RUN_DAY, rows: int = RUN_ROWS
) -> list[Path]:
    """A seeded delivery of each of the agency's datasets for ``day`` in ``home``'s landing."""
    from flux_pipelines.demo.generator import generate_landing

    return generate_landing(
        home / "landing",
        load_registry(SHIPPED_CONTRACTS),
        agencies=[agency],
        days=[day],
        seed=SEED,
        rows_per_delivery=rows,
    )


@dataclass(frozen=True)
class ProcessFigures:
    wall_seconds: float  # the whole fresh process, interpreter start to exit
    import_dagster_seconds: float
    definitions_seconds: float  # import of flux_pipelines.definitions + asset graph
    agencies: int
    assets: int
    checks: int
    sklearn_imported: bool
    assets_by_prefix: dict[str, int]  # first asset-key part (an agency, mostly) -> assets
    run_success: bool | None  # None: no run asked for


def fresh_process(env: dict[str, str], run: str = "") -> ProcessFigures:
    """One fresh interpreter: import dagster, build the definitions, and (``run`` given as
    ``"<agency> <dataset> <YYYY-MM-DD>"``) materialize that partition."""
    reply, wall = run_python(["-c", CHILD, run], env=env, what="definitions process")
    return ProcessFigures(wall_seconds=wall, **reply)


def run_partition_process(
    env: dict[str, str],
    agency: str = RUN_AGENCY,
    dataset: str = RUN_DATASET,
    day: dt.date = RUN_DAY,
) -> ProcessFigures:
    """A small partition's run from a fresh process (its landing must be in place)."""
    return fresh_process(env, f"{agency} {dataset} {day.isoformat()}")


def child_report(
    defs: dg.Definitions,
    graph: Any,
    import_seconds: float,
    definitions_seconds: float,
    sklearn_imported: bool,
    run: str,
) -> None:
    """The child's side: count, optionally run, print one JSON line."""
    prefixes: dict[str, int] = {}
    for key in graph.get_all_asset_keys():
        prefixes[key.path[0]] = prefixes.get(key.path[0], 0) + 1
    success = None
    if run:
        agency, dataset, day = run.split()
        success = _materialize(defs, agency, dataset, day)
    print(
        json.dumps(
            {
                "import_dagster_seconds": import_seconds,
                "definitions_seconds": definitions_seconds,
                "agencies": len(load_registry().agencies),
                "assets": len(graph.get_all_asset_keys()),
                "checks": len(graph.asset_check_keys),
                "sklearn_imported": sklearn_imported,
                "assets_by_prefix": prefixes,
                "run_success": success,
            }
        )
    )


def _materialize(defs: dg.Definitions, agency_id: str, dataset: str, day: str) -> bool:
    """One agency's one dataset for one day, through its ingest job (checks included)."""
    import dagster as dg

    from flux_pipelines.defs.ingest.assets import asset_keys
    from flux_pipelines.defs.ingest.jobs import agency_job_name

    agency = load_registry().agency(agency_id)
    job = defs.resolve_job_def(agency_job_name(agency))
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance,
            partition_key=day,
            asset_selection=list(asset_keys(agency, dataset)),
            run_config=QUIET_LOGS,
            tags={"flux/source": "flux bench"},
            raise_on_error=False,
        )
    return result.success


# --------------------------------------------------------------------------- the bench


@dataclass(frozen=True)
class SizeFigures:
    runs: tuple[ProcessFigures, ...]

    def median(self, name: str) -> float:
        value: float = statistics.median(getattr(r, name) for r in self.runs)
        return value

    @property
    def first(self) -> ProcessFigures:
        return self.runs[0]


def measure_size(workdir: Path, agencies: int | None, repeat: int = REPEAT) -> SizeFigures:
    """``repeat`` fresh processes on one registry (None: the shipped one), each building the
    definitions and running the small partition on one temporary SQLite instance."""
    label = "shipped" if agencies is None else str(agencies)
    home = workdir / "definitions" / label
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    contracts = SHIPPED_CONTRACTS
    if agencies is not None:
        contracts = home / "contracts"
        scale_registry(contracts, agencies)
    land_small_delivery(home)
    env = sqlite_instance_env(home, contracts)
    return SizeFigures(tuple(run_partition_process(env) for _ in range(repeat)))


def run_definitions_bench(
    workdir: Path, sizes: Sequence[int] = SIZES, repeat: int = REPEAT
) -> list[str]:
    shipped = len(load_registry(SHIPPED_CONTRACTS).agencies)
    results = [(f"{shipped} (shipped)", measure_size(workdir, None, repeat))]
    for n in sizes:
        typer.echo(f"definitions bench: {n} agencies ...")
        results.append((str(n), measure_size(workdir, n, repeat)))
    lines = [
        "",
        f"Definitions load and a small run, each from a fresh process, median of {repeat} "
        f"(registry sizes {shipped} shipped, then shipped + generated agencies delivering "
        f"{', '.join(GENERATED_DATASETS)}; run: {RUN_AGENCY}/{RUN_DATASET} {RUN_DAY}, "
        f"~{RUN_ROWS} rows, in-process executor, temporary SQLite instance)",
        f"{'agencies':<14} {'assets':>7} {'checks':>7} {'import dagster s':>17} "
        f"{'definitions s':>14} {'sklearn':>8} {'run wall s':>13} {'run ok':>7}",
    ]
    for label, size in results:
        targets = size.first.agencies >= TARGET_AGENCIES
        defs_cell = f"{size.median('definitions_seconds'):.2f}" + (
            f" (<= {TARGET_DEFINITIONS_SECONDS:.0f})" if targets else ""
        )
        run_cell = f"{size.median('wall_seconds'):.2f}" + (
            f" (<= {TARGET_RUN_SECONDS:.0f})" if targets else ""
        )
        lines.append(
            f"{label:<14} {size.first.assets:>7,} {size.first.checks:>7,} "
            f"{size.median('import_dagster_seconds'):>17.2f} {defs_cell:>14} "
            f"{'yes' if any(r.sklearn_imported for r in size.runs) else 'no':>8} "
            f"{run_cell:>13} {'yes' if all(r.run_success for r in size.runs) else 'NO':>7}"
        )
    lines.append(
        "run wall s per process (the first also creates the SQLite schema and the agency "
        "file): "
        + "; ".join(
            f"{label.split()[0]}: " + ", ".join(f"{r.wall_seconds:.2f}" for r in size.runs)
            for label, size in results
        )
    )
    largest = results[-1][1]
    if largest.first.agencies >= TARGET_AGENCIES:
        defs_s, run_s = largest.median("definitions_seconds"), largest.median("wall_seconds")
        lines.append(
            f"targets at {largest.first.agencies} agencies: definitions {defs_s:.2f}s "
            f"(<= {TARGET_DEFINITIONS_SECONDS:.0f}s: "
            f"{'met' if defs_s <= TARGET_DEFINITIONS_SECONDS else 'NOT met'}), "
            f"small-partition run {run_s:.2f}s (<= {TARGET_RUN_SECONDS:.0f}s: "
            f"{'met' if run_s <= TARGET_RUN_SECONDS else 'NOT met'})"
        )
    return lines
