"""``flux audit``: check the audit trail's chain, re-anchor it, read its records, and have a
witness sign its head (``witness-keygen``, ``witness``, ``verify --witness``).

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
from flux_pipelines.audit.witness import STORE_FILE, WitnessReport, check, keygen, witness
from flux_pipelines.errors import ConfigurationError, WitnessRefused
from flux_pipelines.exits import fail
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


@audit_app.command("verify")
def verify(
    home: HomeOption = None,
    witness_store: Annotated[
        Path | None,
        typer.Option(
            "--witness",
            metavar="DIR",
            help="Also check the trail against this witness store (DIR/witness.jsonl)",
        ),
    ] = None,
    witness_public_key: Annotated[
        Path | None,
        typer.Option(
            metavar="PUB",
            help="The witness's public key (from `flux audit witness-keygen`; get it from the "
            "witness, not from the pipeline host)",
        ),
    ] = None,
) -> None:
    """Check the trail's chain and anchors, and with --witness its signed, witnessed heads.

    Every record's hash, the chain's links and its end against both anchors (audit/head.json
    and state/audit_anchor.json); with --witness, also every witness statement's signature
    and that the trail still has the hash witnessed at each seq: the only check a rewrite by
    whoever can write the whole home cannot pass.

    Exit code: 0 the trail is intact, 1 problems were found, 2 there is no trail (or a
    witness option is missing or unusable).
    """
    if (witness_store is None) != (witness_public_key is None):
        fail("--witness and --witness-public-key go together")
    trail = AuditTrail(resolve_home(home))
    witnessed = witness_store is not None and (witness_store / STORE_FILE).exists()
    if not trail.exists() and not trail.anchored() and not witnessed:
        fail(f"no audit trail at {trail.path}")
    report = trail.verify()  # a trail deleted under its anchors is reported as truncated
    _print_report(report)
    ok = report.ok
    if witness_store is not None and witness_public_key is not None:
        try:
            checked = check(trail.home, witness_store, witness_public_key)
        except ConfigurationError as exc:
            fail(str(exc))
        _print_witness(checked)
        ok = ok and checked.ok
    raise typer.Exit(0 if ok else 1)


def _print_witness(report: WitnessReport) -> None:
    verdict = "OK" if report.ok else f"{len(report.findings)} PROBLEM(S)"
    last = report.last
    seen = f"last witnessed seq {last.seq} at {last.ts}" if last else "nothing witnessed"
    typer.echo(
        f"witness {report.store / STORE_FILE} (key {report.key_id}): "
        f"{len(report.statements)} signed statements, {seen}: {verdict}"
    )
    if last is not None and report.head_seq > last.seq:
        typer.echo(f"  notice seq {last.seq + 1}-{report.head_seq} are not witnessed yet")
    for finding in report.findings:
        typer.echo(f"  {finding}")


@audit_app.command("witness-keygen")
def witness_keygen(
    out: Annotated[Path, typer.Option(help="Folder for witness.key (0600) and witness.pub")],
) -> None:
    """Create the witness's Ed25519 key pair (run it as the witness, not the pipeline).

    Run it as another user or on another host: the private key must never be readable by the
    pipeline host's user."""
    try:
        private, public, kid = keygen(out)
    except ConfigurationError as exc:
        fail(str(exc))
    typer.echo(
        f"wrote {private} (private, 0600: keep it on the witness only) and {public} "
        f"(public, key id {kid}: give it to whoever runs `flux audit verify --witness`)"
    )


@audit_app.command("witness")
def witness_command(
    store: Annotated[
        Path, typer.Option(metavar="DIR", help="The witness store (DIR/witness.jsonl)")
    ],
    key: Annotated[Path, typer.Option(metavar="PRIVATE", help="The witness's private key")],
    home: HomeOption = None,
) -> None:
    """Sign the trail's current head (seq, hash) and append the statement to the store.

    Run by the witness (another user, host or cron job) whose store the pipeline's user can
    read but not write. Refuses when the trail fails verification or no longer has the hash
    it witnessed before. Exit code: 0 signed, 1 refused, 2 no trail or an unusable key.
    """
    trail = AuditTrail(resolve_home(home))
    if not trail.exists() and not trail.anchored() and not (store / STORE_FILE).exists():
        fail(f"no audit trail at {trail.path}")
    try:
        statement = witness(trail.home, store, key)
    except ConfigurationError as exc:
        fail(str(exc))
    except WitnessRefused as exc:
        typer.echo(f"refused: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"{trail.path}: witnessed seq {statement.seq} hash {statement.hash} at {statement.ts} "
        f"(key {statement.key_id}) in {store / STORE_FILE}"
    )


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
        fail(f"no audit trail at {trail.path}")
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
    who: Annotated[
        str | None,
        typer.Option(help="Only access records of this subject or e-mail (implies --kind access)"),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Only the last N matching records")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON record per line")] = False,
) -> None:
    """Print the records matching every filter, oldest first (does not verify: see verify).

    Access records (--kind access) read as: when, who (e-mail or subject, role, agency),
    action, outcome, and the target (agency/dataset/day, file) with the rest of the detail.
    """
    trail = AuditTrail(resolve_home(home))
    if not trail.exists():
        fail(f"no audit trail at {trail.path}")
    if who is not None:
        if kind not in (None, "access"):
            fail("--who selects access records: drop --kind or use --kind access")
        kind = "access"
    if kind is not None and kind not in RECORD_KINDS:
        fail(f"--kind must be one of {', '.join(RECORD_KINDS)}, not {kind!r}")
    if day is not None:
        try:
            dt.date.fromisoformat(day)
        except ValueError:
            fail(f"--day {day!r} is not YYYY-MM-DD")
    entries: Iterable[TrailEntry] = trail.iter_records(
        kind=kind, agency=agency, dataset=dataset, day=day
    )
    if who is not None:
        entries = (e for e in entries if _is_who(e, who))
    if limit is not None:
        entries = deque(entries, maxlen=limit)  # streams: memory stays at N records
    if as_json:
        for entry in entries:
            typer.echo(json.dumps(entry.to_dict(), ensure_ascii=False))
    elif kind == "access":
        _print_access(entries)
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


ACCESS_FIELDS = frozenset({"identity", "action", "outcome"})


def _identity(entry: TrailEntry) -> dict[str, object]:
    found = entry.payload.get("identity")
    return dict(found) if isinstance(found, dict) else {}


def _is_who(entry: TrailEntry, who: str) -> bool:
    ident = _identity(entry)
    email = ident.get("email")
    return ident.get("subject") == who or (
        isinstance(email, str) and bool(email) and email.casefold() == who.casefold()
    )


def _role(role: object, agency: object) -> str:
    return f"{role or 'no role'}{f' of {agency}' if agency else ''}"


def _print_access(entries: Iterable[TrailEntry]) -> None:
    """One line per access: when, who with which role, what, verdict, on what."""
    typer.echo(
        f"{'seq':>6} {'ts (UTC)':<20} {'identity (role)':<44} {'action':<18} {'outcome':<8} target"
    )
    for e in entries:
        ident = _identity(e)
        name = ident.get("email") or ident.get("subject") or "?"
        sub = ident.get("subject")
        subject = f" [sub {sub}]" if sub and sub != name else ""
        who = f"{name}{subject} ({_role(ident.get('role'), ident.get('agency'))})"
        payload = e.payload
        target = "/".join(str(p) for p in (e.agency, e.dataset, e.day) if p) or "-"
        extra = {k: v for k, v in payload.items() if k not in ACCESS_FIELDS}
        if payload.get("action") == "role_change":
            old, new = extra.pop("from", {}), extra.pop("to", {})
            extra.pop("last_seen_seq", None)
            if isinstance(old, dict) and isinstance(new, dict):
                target = (
                    f"{_role(old.get('role'), old.get('agency'))} -> "
                    f"{_role(new.get('role'), new.get('agency'))}"
                )
        if "file" in extra:
            target = f"{target} file={extra.pop('file')}"
        rest = " ".join(
            f"{k}={v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}"
            for k, v in extra.items()
        )
        typer.echo(
            f"{e.seq:>6} {e.ts[:19]:<20} {who:<44} {payload.get('action')!s:<18} "
            f"{payload.get('outcome')!s:<8} {target}{f'  {rest}' if rest else ''}"
        )
