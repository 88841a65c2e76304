"""``flux slo report``: the objectives in ``contracts/slos.yaml`` measured over their window."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from flux_pipelines.ops.slo import SloResult

slo_app = typer.Typer(
    help="Service level objectives: measured values and error budget left.", no_args_is_help=True
)


def render(results: Sequence[SloResult], now: dt.datetime) -> str:
    """A table a person reads: objective, target, measured, good/total, budget left."""
    head = (
        f"{'objective':<20} {'target':>8} {'measured':>9} {'good/total':>12} "
        f"{'budget left':>18}  {'window':<6} status"
    )
    lines = [f"SLOs at {now:%Y-%m-%d %H:%M} UTC", head]
    for r in results:
        measured = "-" if r.ratio is None else f"{100 * r.ratio:.2f}%"
        left = f"{r.budget_left:.2f} ({r.budget_left_pct:.0f}%)"
        lines.append(
            f"{r.id:<20} {100 * r.target:>7.2f}% {measured:>9} {f'{r.good}/{r.total}':>12} "
            f"{left:>18}  {r.window:<6} {r.status}"
        )
    for r in results:
        for example in r.examples:
            lines.append(f"  {r.id}: {example}")
    return "\n".join(lines)


@slo_app.command("report")
def report(
    home: Annotated[
        Path | None,
        typer.Option(help="Flux home; default: $FLUX_HOME, else <project>/.flux"),
    ] = None,
    window: Annotated[
        str | None,
        typer.Option(help="Window for every objective, e.g. 28d, 12h (default: each one's own)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document")] = False,
) -> None:
    """Measure every objective from the Dagster instance, the landing zone and the receipts.

    Exit code: 0 no error budget exhausted, 1 some budget exhausted, 2 a bad objectives file
    or option.
    """
    import dagster as dg

    from flux_pipelines.contracts.registry import load_registry
    from flux_pipelines.errors import ConfigurationError
    from flux_pipelines.home import resolve_home
    from flux_pipelines.instance.config import prepare_dagster_home
    from flux_pipelines.ops.slo import evaluate, load_slos

    now = dt.datetime.now(dt.UTC)
    try:
        slos = load_slos()
        root = resolve_home(home)
        registry = load_registry()
        prepare_dagster_home(root)
        with dg.DagsterInstance.get() as instance:
            results = evaluate(root, instance, registry, now=now, window=window, slos=slos)
    except ConfigurationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        doc = {
            "at": now.isoformat(timespec="seconds"),
            "version": slos.version,
            "objectives": [r.as_dict() for r in results],
        }
        typer.echo(json.dumps(doc, indent=2))
    else:
        typer.echo(render(results, now))
    raise typer.Exit(1 if any(r.status == "exhausted" for r in results) else 0)
