"""The ``flux`` command: demo, load, validate, contracts, bench."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from flux_pipelines.audit.cli import audit_app
from flux_pipelines.cli.access import access_app
from flux_pipelines.cli.ops import ops_app
from flux_pipelines.cli.slo import slo_app
from flux_pipelines.errors import ConfigurationError, TransientError
from flux_pipelines.exits import fail
from flux_pipelines.home import resolve_home

if TYPE_CHECKING:
    from flux_pipelines.contracts.registry import Registry

BENCH_PARTS = ("all", "throughput", "definitions", "backfill", "monitors", "risk", "linking")

app = typer.Typer(
    help="Flux: contract-driven, multi-agency data pipeline on Dagster.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
contracts_app = typer.Typer(help="List and show data contracts.", no_args_is_help=True)
app.add_typer(contracts_app, name="contracts")
app.add_typer(audit_app, name="audit")
app.add_typer(access_app, name="access")
app.add_typer(slo_app, name="slo")
app.add_typer(ops_app)  # purge, backup, restore: top-level commands
quality_app = typer.Typer(
    help="The quality scorecard and the certification gate.", no_args_is_help=True
)
app.add_typer(quality_app, name="quality")


@app.callback()
def _private_files() -> None:
    # Runs before every subcommand: files this process and its children (the servers and run
    # workers `flux dev` starts) create are unreadable to others. Folder modes (`flux access
    # apply`) are the guarantee; this keeps folders not yet secured private.
    from flux_pipelines.access.permissions import private_umask

    private_umask()


HomeOption = Annotated[
    Path | None,
    typer.Option(
        help="Flux home (landing/, warehouse/, published/, audit/, the Dagster instance); "
        "default: $FLUX_HOME, else <project>/.flux"
    ),
]

DEMO_AGENCIES = ["nasa", "nga", "national-archives", "smithsonian-serc", "dod"]
DEMO_FIRST_DAY = dt.date(2026, 1, 5)


def _internal_error(doing: str, exc: Exception) -> NoReturn:
    """Exit 3 with one classified line, not a traceback: the failure is Flux's (or the
    machine's), not a verdict on the input, and the user must be able to tell the two apart."""
    from flux_pipelines.reports.verdict import INTERNAL_ERROR

    kind = "transient error" if isinstance(exc, TransientError) else "internal error"
    lines = str(exc).strip().splitlines()
    detail = lines[0] if lines else "no detail"
    fail(
        f"{kind} ({type(exc).__name__}) while {doing}: {detail}. This is no verdict on the "
        "input: retry, and if it fails again report it with this line and the file.",
        code=INTERNAL_ERROR,
    )


def _ids_or_fail(agency: str | None, dataset: str | None) -> None:
    """Exit 2, naming the known ids, for an unknown agency or dataset or an agency that does
    not deliver the dataset: a typo must never read as 'nothing to show' or 'no overrides'."""
    from flux_pipelines.contracts.registry import check_ids, load_registry

    try:
        check_ids(load_registry(), agency, dataset)
    except ConfigurationError as exc:
        fail(str(exc))


@app.command()
def demo(
    home: HomeOption = None,
    days: Annotated[int, typer.Option(min=1, max=366)] = 7,
    seed: Annotated[int, typer.Option()] = 42,
    rows: Annotated[int, typer.Option(min=10, help="Rows per delivery (about)")] = 400,
    agencies: Annotated[str, typer.Option(help="Comma-separated agency ids")] = ",".join(
        DEMO_AGENCIES
    ),
) -> None:
    """Generate seeded deliveries with defects, load them all through Dagster, summarise."""
    from flux_pipelines.cli.demo import run_demo

    try:
        run_demo(
            home=resolve_home(home),
            agencies=[a.strip() for a in agencies.split(",") if a.strip()],
            first_day=DEMO_FIRST_DAY,
            days=days,
            seed=seed,
            rows=rows,
        )
    except ConfigurationError as exc:
        fail(str(exc))


@app.command()
def dev(
    home: HomeOption = None,
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Webserver port")] = 3000,
    metrics_port: Annotated[
        str,
        typer.Option(
            help="Port of the metrics and readiness exporter started beside them; 'off': none "
            "(default: $FLUX_DEV_METRICS_PORT, else 9464)"
        ),
    ] = "env",
) -> None:
    """Start Dagster's webserver and daemon (sensors, schedules, queued runs) on loopback,
    and the metrics exporter (/metrics, /healthz, /readyz).

    Storage: PostgreSQL when DAGSTER_PG_HOST is set, else embedded SQLite under
    <home>/dagster_home. Ctrl-C or SIGTERM stops the webserver, daemon, code servers and
    exporter.
    """
    from flux_pipelines.cli.dev import run_dev
    from flux_pipelines.contracts.registry import load_registry

    _registry_or_fail(load_registry)  # a broken contract fails here, before any server starts
    try:
        chosen: int | str | None = metrics_port
        if metrics_port == "off":
            chosen = None
        elif metrics_port != "env":
            if not metrics_port.isdigit():
                fail(f"--metrics-port {metrics_port!r}: give a port number or 'off'")
            chosen = int(metrics_port)
        code = run_dev(resolve_home(home), host, port, chosen)
    except ConfigurationError as exc:
        fail(str(exc))
    raise typer.Exit(code)


@app.command()
def load(
    agency: Annotated[str, typer.Option(help="Agency id, e.g. nasa")],
    dataset: Annotated[str, typer.Option(help="Dataset id, e.g. meteorites")],
    day: Annotated[str | None, typer.Option(help="The delivery day, YYYY-MM-DD")] = None,
    start: Annotated[
        str | None, typer.Option("--from", help="First day of a range, YYYY-MM-DD")
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="Last day of a range, YYYY-MM-DD")] = None,
    home: HomeOption = None,
) -> None:
    """Load a delivery already in <home>/landing/<agency>/<dataset>/<day>/ through Dagster.

    One run of the agency's ingest job (recorded in the home's Dagster instance, shown by
    `flux dev`) with every check; then per day: files, rows in, curated, quarantined, reject
    rate, check results, top rules. Exit code: 0 every day loaded cleanly, 1 some rows
    quarantined, 2 a file rejected whole, the conservation or contract_schema check failed,
    or the run failed.
    """
    from flux_pipelines.cli.load import run_load

    try:
        code = run_load(
            home=resolve_home(home),
            agency_id=agency,
            dataset=dataset,
            day=day,
            start=start,
            end=end,
        )
    except ConfigurationError as exc:
        fail(str(exc))
    raise typer.Exit(code)


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A delivered file")],
    dataset: Annotated[str, typer.Option(help="Dataset id, e.g. meteorites")],
    day: Annotated[
        str | None, typer.Option(help="Delivery day (YYYY-MM-DD): picks the contract version")
    ] = None,
    agency: Annotated[
        str | None,
        typer.Option(
            help="Agency id: the verdict with its severity overrides (default: the "
            "contract's own severities)"
        ),
    ] = None,
    errors_csv: Annotated[
        Path | None,
        typer.Option(help="Write every violation to this CSV (formula cells neutralised)"),
    ] = None,
    show: Annotated[int, typer.Option(help="How many violations to print")] = 10,
) -> None:
    """Give an agency Flux's verdict on a file without loading anything.

    Exit code: 0 every row loads, 1 some rows would be quarantined, 2 the file is rejected
    (or an unknown agency, dataset or day was given), 3 Flux failed: no verdict.
    """
    import duckdb

    from flux_pipelines.cli.verdict import print_verdict, write_errors_csv
    from flux_pipelines.ingest.readers import display_name
    from flux_pipelines.reports.verdict import validate_file

    try:
        when = dt.date.fromisoformat(day) if day else dt.date.today()
    except ValueError:
        fail(f"--day {day!r} is not YYYY-MM-DD")
    try:
        verdict = validate_file(file, dataset=dataset, day=when, agency=agency)
        print_verdict(verdict, show=show)
    except ConfigurationError as exc:
        fail(str(exc))
    except Exception as exc:  # anything else is a Flux failure: classified, exit 3
        _internal_error(f"validating {display_name(file)}", exc)
    if errors_csv is not None:
        try:
            written = write_errors_csv(verdict.violations, errors_csv)
        except (OSError, duckdb.Error) as exc:
            fail(f"cannot write --errors-csv {errors_csv}: {str(exc).strip().splitlines()[0]}")
        typer.echo(f"wrote {written} violation(s) to {errors_csv}")
    raise typer.Exit(verdict.exit_code)


from flux_pipelines.cli.metrics import metrics  # noqa: E402 - prometheus loads when it runs
from flux_pipelines.cli.serve import serve  # noqa: E402 - FastAPI loads only when it runs

app.command("serve")(serve)
app.command("metrics")(metrics)


@contracts_app.command("list")
def contracts_list() -> None:
    """Every dataset, its versions and the agencies delivering it."""
    from flux_pipelines.contracts.registry import load_registry

    registry = _registry_or_fail(load_registry)
    typer.echo(f"{'dataset':<24} {'version':<9} {'from':<11} {'domain':<12} rules  agencies")
    for dataset, versions in sorted(registry.contracts.items()):
        for c in versions:
            agencies = ", ".join(a.id for a in registry.agencies_for(dataset))
            typer.echo(
                f"{dataset:<24} {c.version:<9} {c.effective_from!s:<11} {c.domain:<12} "
                f"{len(c.catalogue()):>5}  {agencies}"
            )


@contracts_app.command("show")
def contracts_show(
    dataset: Annotated[str, typer.Argument(help="Dataset id")],
    version: Annotated[str | None, typer.Option(help="Version (default: latest)")] = None,
    output: Annotated[
        str, typer.Option("--format", help="page | json-schema | ddl | rules")
    ] = "page",
    agency: Annotated[
        str | None, typer.Option(help="Show rules as this agency sees them (its overrides)")
    ] = None,
) -> None:
    """Show a contract as a readable page, its JSON Schema, its DuckDB DDL or its rules."""
    from flux_pipelines.contracts.ddl import ddl_script
    from flux_pipelines.contracts.jsonschema_export import json_schema
    from flux_pipelines.contracts.page import contract_page
    from flux_pipelines.contracts.registry import load_registry

    registry = _registry_or_fail(load_registry)
    _ids_or_fail(agency, dataset)
    versions = registry.versions(dataset)
    chosen = [c for c in versions if version in (None, c.version)]
    if not chosen:
        fail(f"{dataset} has no version {version}; have {[c.version for c in versions]}")
    contract = chosen[-1]
    if agency is not None:
        seen_by = registry.agency(agency)
        contract = registry.contract_for(dataset, contract.effective_from, seen_by)
    if output == "page":
        typer.echo(contract_page(contract, registry.severity_overrides(dataset)))
    elif output == "json-schema":
        typer.echo(json.dumps(json_schema(contract), indent=2))
    elif output == "ddl":
        typer.echo(ddl_script(contract) + ";")
    elif output == "rules":
        for r in contract.catalogue():
            mark = " (override)" if r.severity != r.default_severity else ""
            typer.echo(
                f"{r.id:<44} {r.scope:<13} {r.severity + mark:<19} {r.category:<12} {r.message}"
            )
    else:
        fail(f"--format must be page, json-schema, ddl or rules, not {output!r}")


@contracts_app.command("diff")
def contracts_diff(
    dataset: Annotated[str, typer.Argument(help="Dataset id")],
    old: Annotated[str, typer.Argument(help="The earlier version, e.g. 1.0.0")],
    new: Annotated[str, typer.Argument(help="The later version, e.g. 2.0.0")],
    fail_on_breaking: Annotated[
        bool, typer.Option(help="Exit 1 when the change can break agencies or analysts")
    ] = False,
) -> None:
    """What changes from one version to another, and whether it can break agencies'
    deliveries or analysts' queries."""
    from flux_pipelines.contracts.evolution import Audience, diff, is_breaking
    from flux_pipelines.contracts.registry import load_registry

    registry = _registry_or_fail(load_registry)
    _ids_or_fail(None, dataset)
    versions = {c.version: c for c in registry.versions(dataset)}
    for version in (old, new):
        if version not in versions:
            fail(f"{dataset} has no version {version}; have {sorted(versions)}")
    changes = diff(versions[old], versions[new])
    typer.echo(f"{dataset} {old} -> {new}: {len(changes)} change(s)")
    for change in changes:
        breaks = f"  [breaks {', '.join(change.breaks)}]" if change.breaks else ""
        typer.echo(f"  {change.subject:<32} {change.what}{breaks}")
    audiences: tuple[Audience, ...] = ("agencies", "analysts")
    verdicts = {a: is_breaking(changes, a) for a in audiences}
    for audience, breaking in verdicts.items():
        typer.echo(f"breaking for {audience}: {'yes' if breaking else 'no'}")
    if fail_on_breaking and any(verdicts.values()):
        raise typer.Exit(1)


@contracts_app.command("pages")
def contracts_pages(
    out: Annotated[Path, typer.Option(help="Folder for one Markdown page per dataset")] = Path(
        ".flux/contract_pages"
    ),
) -> None:
    """Write every dataset's contract page (latest version, agencies' overrides listed)."""
    from flux_pipelines.contracts.page import contract_page
    from flux_pipelines.contracts.registry import load_registry

    registry = _registry_or_fail(load_registry)
    out.mkdir(parents=True, exist_ok=True)
    for dataset, versions in sorted(registry.contracts.items()):
        page = contract_page(versions[-1], registry.severity_overrides(dataset))
        if len(versions) > 1:
            history = ", ".join(f"{c.version} from {c.effective_from}" for c in versions)
            page = page.replace("\n\n", f"\n\nVersions: {history}.\n\n", 1)
        (out / f"{dataset}.md").write_text(page, encoding="utf-8")
    typer.echo(f"wrote {len(registry.contracts)} contract pages to {out}")


@quality_app.command("override")
def quality_override(
    agency: Annotated[str, typer.Option(help="Agency id")],
    dataset: Annotated[str, typer.Option(help="Dataset id")],
    day: Annotated[str, typer.Option(help="Delivery day, YYYY-MM-DD")],
    reason: Annotated[str, typer.Option(help="Why the held-back day may be published")],
    token: Annotated[
        str | None,
        typer.Option(
            metavar="FILE",
            help="A file holding your identity provider's access token ('-': read it from "
            "stdin); default: $FLUX_TOKEN. Never the token itself (it would land in the shell "
            "history); it is never echoed.",
        ),
    ] = None,
    by: Annotated[str | None, typer.Option("--by", hidden=True)] = None,
    home: HomeOption = None,
) -> None:
    """Certify an agency-day the anomaly monitors held back, as the operator your token names.

    The decision and the access (allowed or denied) are recorded in the audit trail.
    Exit code: 0 certified, 2 refused (no valid token, not an operator, nothing to override).
    """
    import os

    from flux_pipelines.access.identity import TokenVerifier
    from flux_pipelines.access.policy import load_policy
    from flux_pipelines.audit.trail import AuditTrail
    from flux_pipelines.contracts.registry import load_registry
    from flux_pipelines.errors import AccessDenied, AuditTrailCorrupt, AuthenticationError
    from flux_pipelines.quality.certification import override

    if by is not None:  # a typed name proves nothing: the person is who the token says
        fail(
            "--by is gone: who overrides now comes from a verified token (--token FILE or "
            "$FLUX_TOKEN), and only an operator may override"
        )
    _ids_or_fail(agency, dataset)
    try:
        when = dt.date.fromisoformat(day)
    except ValueError:
        fail(f"--day {day!r} is not YYYY-MM-DD")
    if token is None:
        raw = os.environ.get("FLUX_TOKEN", "")
        source = "$FLUX_TOKEN"
    else:
        source = "stdin" if token == "-" else "the --token file"
        try:
            raw = sys.stdin.read() if token == "-" else Path(token).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:  # never echo the value: it may be a token
            fail(
                f"cannot read the --token file ({getattr(exc, 'strerror', None) or 'not text'}); "
                "--token takes a file "
                "holding the token, or - for stdin; or set $FLUX_TOKEN"
            )
    raw = raw.strip()
    if not raw:
        fail(
            f"no token in {source}: sign in at the identity provider and pass its access token "
            "(--token FILE, --token - for stdin, or $FLUX_TOKEN)"
        )
    try:
        policy = load_policy()
        agencies = {a.id for a in load_registry().agencies}
        identity = TokenVerifier(policy).identify(raw, agencies)
    except AuthenticationError as exc:
        fail(f"not authenticated: {exc}")
    except (AccessDenied, ConfigurationError) as exc:
        fail(str(exc))
    root = resolve_home(home)
    try:
        verdict = override(
            root / "published",
            AuditTrail(root),
            agency=agency,
            dataset=dataset,
            day=when,
            identity=identity,
            reason=reason,
            policy=policy,
        )
    except AccessDenied as exc:
        fail(f"{exc} (the attempt is recorded in the audit trail)")
    except (ConfigurationError, AuditTrailCorrupt, ValueError) as exc:
        fail(str(exc))
    typer.echo(
        f"{verdict.agency}/{verdict.dataset} {verdict.day} certified by {verdict.overridden_by} "
        f"(was {verdict.anomaly_severity}: {verdict.summary}); the next cross-agency refresh "
        "publishes it"
    )


@quality_app.command("scorecard")
def quality_scorecard(
    home: HomeOption = None,
    agency: Annotated[str | None, typer.Option(help="Only this agency")] = None,
    dataset: Annotated[str | None, typer.Option(help="Only this dataset")] = None,
) -> None:
    """Rows, reject rate, rules fired, anomalies and timeliness per agency, dataset and day."""
    import duckdb

    from flux_pipelines.quality.scorecard import scorecard_glob
    from flux_pipelines.sql import literal, rows

    _ids_or_fail(agency, dataset)
    published = resolve_home(home) / "published"
    if not list(published.glob("*/_scorecard/*/*.parquet")):
        fail(f"no scorecard under {published} yet: load a delivery first", code=1)
    with duckdb.connect() as conn:
        found = rows(
            conn,
            "SELECT agency, dataset, _partition_date, rows_in, reject_rate_pct, rules_fired, "
            "coalesce(anomaly_severity, '-'), on_time FROM "
            f"read_parquet({literal(scorecard_glob(published))}, union_by_name = true) "
            "WHERE ($1 IS NULL OR agency = $1) AND ($2 IS NULL OR dataset = $2) "
            "ORDER BY 1, 2, 3",
            [agency, dataset],
        )
    typer.echo(
        f"{'agency':<20} {'dataset':<22} {'day':<10} {'rows':>7} {'reject%':>7} "
        f"{'rules':>5} {'anomaly':<7} on_time"
    )
    for a, d, day, n, rate, fired, anomaly, on_time in found:
        typer.echo(
            f"{a:<20} {d:<22} {day!s:<10} {n:>7} {rate:>7.2f} {fired:>5} {anomaly:<7} {on_time}"
        )


@app.command()
def status(
    home: HomeOption = None,
    agency: Annotated[str | None, typer.Option(help="Only this agency")] = None,
    dataset: Annotated[str | None, typer.Option(help="Only this dataset")] = None,
    days: Annotated[int, typer.Option(min=1, max=366, help="Days ending today (UTC)")] = 14,
    start: Annotated[
        str | None, typer.Option("--from", help="First day, YYYY-MM-DD (instead of --days)")
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="Last day, YYYY-MM-DD")] = None,
) -> None:
    """Per agency, dataset and day: loaded, failed, late, pending or not expected.

    Read from the home's Dagster instance (what the UI shows) and the registry (onboarding
    date, delivery deadline). Exit code: 0 nothing late or failed, 1 otherwise.
    """
    from flux_pipelines.quality.delivery_status import status_report

    _ids_or_fail(agency, dataset)
    try:
        text, code = status_report(
            resolve_home(home), agency=agency, dataset=dataset, days=days, start=start, end=end
        )
    except ConfigurationError as exc:
        fail(str(exc))
    typer.echo(text)
    raise typer.Exit(code)


@app.command()
def bench(
    rows: Annotated[int, typer.Option(help="Rows in the generated delivery")] = 1_000_000,
    workdir: Annotated[Path, typer.Option(help="Scratch folder")] = Path(".flux/bench"),
    big_gb: Annotated[
        float, typer.Option(help="Also stream a file of this many GB (0 = skip)")
    ] = 0.0,
    pairs: Annotated[
        int,
        typer.Option(min=1, max=50, help="Throughput: baseline/Flux pairs of fresh processes"),
    ] = 5,
    backfill_days: Annotated[
        int, typer.Option(min=0, max=3660, help="Days in the one-agency backfill (0 = skip)")
    ] = 365,
    backfill_multi_days: Annotated[
        int,
        typer.Option(min=0, max=3660, help="Days in the multi-agency backfill (0 = skip)"),
    ] = 30,
    only: Annotated[
        str, typer.Option(help=f"Which part to run: {' | '.join(BENCH_PARTS)}")
    ] = "all",
) -> None:
    """Print throughput, definitions load, backfill, monitor precision, risk scoring and
    linking figures.

    Exits 1 when a backfill loses rows or days or two steps write one agency file at once.
    """
    from flux_pipelines.bench.run import run_bench

    if only not in BENCH_PARTS:
        fail(f"--only must be one of {', '.join(BENCH_PARTS)}, not {only!r}")
    problems = run_bench(
        rows=rows,
        workdir=workdir.resolve(),
        big_gb=big_gb,
        pairs=pairs,
        backfill_days=backfill_days,
        backfill_multi_days=backfill_multi_days,
        only=only,
    )
    if problems:
        raise typer.Exit(1)


def _registry_or_fail(loader: Callable[[], Registry]) -> Registry:
    """The registry with its cross-dataset rules' SQL checked (not done at definitions load),
    or exit 2 with the configuration error."""
    try:
        return loader().check_cross_queries()
    except ConfigurationError as exc:
        fail(str(exc))


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
