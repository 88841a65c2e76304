"""``flux audit``: check the audit trail's chain, re-anchor it, and read its records.

Mounted by the main command as ``app.add_typer(audit_app, name="audit")``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer

from flux_pipelines.audit.trail import (
    RECORD_KINDS,
    AuditTrail,
    TrailEntry,
    VerifyReport,
)
from flux_pipelines.home import resolve_home

audit_app = typer.Typer(
    help="Verify and read the hash-chained audit trail.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

HomeOption = Annotated[
    Path | None,
    typer.Option(help="Flux home holding audit/trail.jsonl (default: $FLUX_HOME, else .flux)"),
]
PAYLOAD_WIDTH = 70


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@audit_app.command("verify")
def verify(home: HomeOption = None) -> None:
    """Check every record's hash, the chain's links and its end against both anchors
    (audit/head.json and state/audit_anchor.json).

    Exit code: 0 the trail is intact, 1 problems were found, 2 there is no trail.
    """
    trail = AuditTrail(resolve_home(home))
    if not trail.exists() and not trail.anchored():
        _fail(f"no audit trail at {trail.path}")
    report = trail.verify()  # a trail deleted under its anchors is reported as truncated
    _print_report(report)
    raise typer.Exit(0 if report.ok else 1)


@audit_app.command("anchor")
def anchor(
    home: HomeOption = None,
    accept: Annotated[
        bool,
        typer.Option(
            "--accept", help="Anchor the trail as it is even though verify finds problems"
        ),
    ] = False,
) -> None:
    """Point both anchors at the trail's last record (the old ones are kept beside them).

    For a trail older than state/audit_anchor.json, or, with --accept, after a finding was
    understood and accepted: loads stop while the trail disagrees with its anchors.
    Exit code: 0 anchored, 1 refused (verify found problems), 2 there is no trail.
    """
    trail = AuditTrail(resolve_home(home))
    if not trail.exists() and not trail.anchored():
        _fail(f"no audit trail at {trail.path}")
    report = trail.verify()
    blocking = [p for p in report.problems if p.kind != "unanchored"]
    if blocking and not accept:
        _print_report(report)
        typer.echo(
            "refused: restore the trail from a copy, or pass --accept once the problems "
            "above are understood and accepted",
            err=True,
        )
        raise typer.Exit(1)
    end = trail.anchor_at_end()
    typer.echo(
        f"{trail.path}: anchored at seq {end.seq} hash {end.hash} "
        f"({trail.anchor_path}, {trail.state_anchor_path})"
    )


def _print_report(report: VerifyReport) -> None:
    verdict = "OK" if report.ok else f"{len(report.problems)} PROBLEM(S)"
    typer.echo(
        f"{report.path}: {report.records} records, head seq {report.head_seq} "
        f"hash {report.head_hash or '-'}: {verdict}"
    )
    for notice in report.notices:
        typer.echo(f"  notice {notice}")
    for problem in report.problems:
        typer.echo(f"  {problem}")


@audit_app.command("show")
def show(
    home: HomeOption = None,
    kind: Annotated[str | None, typer.Option(help=f"One of {', '.join(RECORD_KINDS)}")] = None,
    agency: Annotated[str | None, typer.Option(help="Agency id")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset id")] = None,
    day: Annotated[str | None, typer.Option(help="Partition day, YYYY-MM-DD")] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Only the last N matching records")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON record per line")] = False,
) -> None:
    """Print the records matching every filter, oldest first (does not verify: see verify)."""
    trail = AuditTrail(resolve_home(home))
    if not trail.exists():
        _fail(f"no audit trail at {trail.path}")
    if kind is not None and kind not in RECORD_KINDS:
        _fail(f"--kind must be one of {', '.join(RECORD_KINDS)}, not {kind!r}")
    if day is not None:
        try:
            dt.date.fromisoformat(day)
        except ValueError:
            _fail(f"--day {day!r} is not YYYY-MM-DD")
    entries: Iterable[TrailEntry] = trail.iter_records(
        kind=kind, agency=agency, dataset=dataset, day=day
    )
    if limit is not None:
        entries = deque(entries, maxlen=limit)  # streams: memory stays at N records
    if as_json:
        for entry in entries:
            typer.echo(json.dumps(entry.to_dict(), ensure_ascii=False))
    else:
        _print_table(entries)


def _print_table(entries: Iterable[TrailEntry]) -> None:
    head = f"{'seq':>6} {'ts (UTC)':<20} {'kind':<16} {'agency':<18} {'dataset':<20} {'day':<10}"
    typer.echo(f"{head} payload")
    for e in entries:
        payload = json.dumps(e.payload, ensure_ascii=False, separators=(",", ":"))
        if len(payload) > PAYLOAD_WIDTH:
            payload = payload[: PAYLOAD_WIDTH - 3] + "..."
        run = f" run={e.run_id}" if e.run_id else ""
        typer.echo(
            f"{e.seq:>6} {e.ts[:19]:<20} {e.kind:<16} {e.agency or '-':<18} "
            f"{e.dataset or '-':<20} {e.day or '-':<10} {payload}{run}"
        )
