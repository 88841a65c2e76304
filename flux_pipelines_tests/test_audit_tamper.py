"""Issue 13, point 9: the audit trail cannot be cut silently.

Each test reproduces a defect a hostile-input campaign found: a tail deleted together with
(or under a rewritten) ``head.json`` passed ``flux audit verify``, and a corrupt trail let
every later load commit and publish before failing, leaving data without audit records.
Real files throughout: the trail is written by ``AuditTrail``, tampered with by hand, and
loads run through Dagster against a real DuckDB warehouse.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pytest
from typer.testing import CliRunner

from flux_pipelines.audit import AuditRecord, AuditTrail
from flux_pipelines.audit.cli import audit_app
from flux_pipelines.errors import AuditAnchorMismatch
from flux_pipelines.names import agency_db
from flux_pipelines_tests.conftest import deliver, materialize

runner = CliRunner()
STATE = "state/audit_anchor.json"
DAY = "2026-02-03"


def build(home: Path, n: int = 10) -> AuditTrail:
    trail = AuditTrail(home)
    for i in range(n):
        trail.append(AuditRecord("load", {"i": i}, agency="nasa", dataset="meteorites"))
    return trail


def lines_of(trail: AuditTrail) -> list[str]:
    return trail.path.read_text(encoding="utf-8").splitlines()


def cut_to(trail: AuditTrail, keep: int) -> None:
    """Delete the trail's last records, as an attacker with access to audit/ would."""
    kept = lines_of(trail)[:keep]
    trail.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def write_head(trail: AuditTrail, seq: int, hash_: str) -> None:
    trail.anchor_path.write_text(json.dumps({"seq": seq, "hash": hash_}), encoding="utf-8")


def forge(prev: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """n records Flux never wrote, correctly chained after ``prev`` (the format is public)."""
    out: list[dict[str, Any]] = []
    for _ in range(n):
        body = {**prev, "seq": prev["seq"] + 1, "prev_hash": prev["hash"]}
        body["payload"] = {"forged": True}
        body.pop("hash")
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        prev = {**body, "hash": hashlib.sha256(text.encode("utf-8")).hexdigest()}
        out.append(prev)
    return out


def findings(trail: AuditTrail) -> list[tuple[str, int | None, int | None]]:
    return [(p.kind, p.line, p.seq) for p in trail.verify().problems]


def cli_verify(home: Path) -> Any:
    return runner.invoke(audit_app, ["verify", "--home", str(home)])


def assert_refused(trail: AuditTrail, match: str) -> None:
    """Neither the pre-load check nor an append accepts the trail, and nothing is written."""
    before = trail.path.read_bytes() if trail.exists() else None
    head = trail.anchor_path.read_bytes() if trail.anchor_path.exists() else None
    with pytest.raises(AuditAnchorMismatch, match=match):
        trail.require_intact()
    with pytest.raises(AuditAnchorMismatch, match=match):
        trail.append(AuditRecord("report", {"paths": []}))
    assert (trail.path.read_bytes() if trail.exists() else None) == before
    assert (trail.anchor_path.read_bytes() if trail.anchor_path.exists() else None) == head


# --- the second anchor ---------------------------------------------------------------------


def test_every_append_writes_the_second_anchor_outside_audit(tmp_path: Path) -> None:
    trail = build(tmp_path, 3)
    last = json.loads(lines_of(trail)[-1])
    assert trail.state_anchor_path == tmp_path / STATE
    assert json.loads(trail.state_anchor_path.read_text()) == {"seq": 3, "hash": last["hash"]}
    assert trail.state_anchor_path.read_text() == trail.anchor_path.read_text()
    report = trail.verify()
    assert report.ok and report.notices == [] and report.state_anchor == report.anchor
    trail.require_intact()


def test_cut_tail_with_head_json_removed_is_found(tmp_path: Path) -> None:
    """The old defect: this passed verify (only a `no_anchor` notice)."""
    trail = build(tmp_path, 10)
    cut_to(trail, 7)
    trail.anchor_path.unlink()
    assert findings(trail) == [("truncated", 8, 8)]
    [problem] = trail.verify().problems
    assert STATE in problem.message and "seq 8-10 were cut" in problem.message
    result = cli_verify(tmp_path)
    assert result.exit_code == 1, result.output
    assert "1 PROBLEM(S)" in result.output and "truncated" in result.output
    assert_refused(trail, rf"ends at seq 7 but {STATE} anchors seq 10")


def test_head_json_rewritten_to_match_a_cut_tail_is_found(tmp_path: Path) -> None:
    trail = build(tmp_path, 10)
    cut_to(trail, 7)
    write_head(trail, 7, json.loads(lines_of(trail)[-1])["hash"])
    assert findings(trail) == [("truncated", 8, 8)]
    assert cli_verify(tmp_path).exit_code == 1
    assert_refused(trail, rf"ends at seq 7 but {STATE} anchors seq 10")


def test_the_whole_audit_folder_removed_is_found(tmp_path: Path) -> None:
    trail = build(tmp_path, 4)
    shutil.rmtree(trail.dir)
    assert findings(trail) == [("truncated", 1, 1)]
    result = cli_verify(tmp_path)
    assert result.exit_code == 1 and "no audit trail" not in result.output
    assert_refused(trail, rf"ends at seq 0 but {STATE} anchors seq 4")


def test_a_rechained_tail_with_a_rewritten_head_is_found(tmp_path: Path) -> None:
    """Cut to 7, forge seq 8-11 with valid hashes and anchor them in head.json: the record
    at the second anchor's seq is not the one it anchors (found by reading back 2 lines)."""
    trail = build(tmp_path, 10)
    cut_to(trail, 7)
    forged = forge(json.loads(lines_of(trail)[-1]), 4)
    with trail.path.open("a", encoding="utf-8") as f:
        f.writelines(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in forged)
    write_head(trail, 11, forged[-1]["hash"])
    assert findings(trail) == [("rewritten", 10, 10)]
    assert cli_verify(tmp_path).exit_code == 1
    assert_refused(trail, rf"record seq 10 is not the one {STATE} anchors")


def test_a_missing_second_anchor_is_a_finding_until_a_human_anchors(tmp_path: Path) -> None:
    """Also the upgrade path for a trail written before the second anchor existed."""
    trail = build(tmp_path, 5)
    trail.state_anchor_path.unlink()
    assert findings(trail) == [("unanchored", None, 5)]
    assert cli_verify(tmp_path).exit_code == 1
    assert_refused(trail, "the anchor outside audit/.*is missing")

    anchored = runner.invoke(audit_app, ["anchor", "--home", str(tmp_path)])
    assert anchored.exit_code == 0, anchored.output
    assert cli_verify(tmp_path).exit_code == 0
    assert trail.append(AuditRecord("report", {"paths": []})).seq == 6
    assert trail.verify().ok


def test_anchor_refuses_a_cut_tail_unless_accepted_and_keeps_the_evidence(
    tmp_path: Path,
) -> None:
    trail = build(tmp_path, 10)
    cut_to(trail, 7)
    trail.anchor_path.unlink()
    old_state = trail.state_anchor_path.read_bytes()

    refused = runner.invoke(audit_app, ["anchor", "--home", str(tmp_path)])
    assert refused.exit_code == 1 and "truncated" in refused.output
    assert trail.state_anchor_path.read_bytes() == old_state and not trail.anchor_path.exists()

    accepted = runner.invoke(audit_app, ["anchor", "--accept", "--home", str(tmp_path)])
    assert accepted.exit_code == 0, accepted.output
    [kept] = trail.state_anchor_path.parent.glob("audit_anchor.json.replaced-*")
    assert kept.read_bytes() == old_state  # the evidence of the cut is kept beside
    assert trail.verify().ok
    assert trail.append(AuditRecord("report", {"paths": []})).seq == 8


def test_anchors_left_behind_by_a_crash_are_only_a_notice(tmp_path: Path) -> None:
    """A writer killed between the trail's fsync and the anchors' rename: no false alarm."""
    trail = build(tmp_path, 5)
    head, state = trail.anchor_path.read_bytes(), trail.state_anchor_path.read_bytes()
    trail.append(AuditRecord("report", {"paths": []}))
    trail.anchor_path.write_bytes(head)
    trail.state_anchor_path.write_bytes(state)
    report = trail.verify()
    assert report.ok and [n.kind for n in report.notices] == ["anchor_behind"]
    trail.require_intact()
    assert trail.append(AuditRecord("report", {"paths": []})).seq == 7
    assert trail.verify().notices == []


# --- through the real load path ------------------------------------------------------------


def _curated(home: Path, agency: str, table: str) -> list[tuple[Any, ...]]:
    path = agency_db(home, agency)
    if not path.exists():
        return []
    with duckdb.connect(str(path), read_only=True) as conn:
        tables = {r[0] for r in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        if table not in tables:
            return []
        return conn.execute(
            f"SELECT * FROM {table} WHERE _partition_date = ? ORDER BY _file, _row_number", [DAY]
        ).fetchall()


def _failure(result: Any) -> str:
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    error, seen = failure.step_failure_data.error, []
    while error is not None:  # Dagster wraps the step's exception: read the whole chain
        seen.append(f"{error.cls_name}: {error.message}")
        error = error.cause
    return "\n".join(seen)


def test_a_corrupt_trail_stops_loads_before_they_commit(tmp_path: Path) -> None:
    """The old defect: these loads committed and published, then failed at the append."""
    deliver(tmp_path, "nasa", "meteorites", DAY, rows=60, seed=11)
    assert materialize(tmp_path, [("nasa", "meteorites")], DAY).success
    trail = AuditTrail(tmp_path)
    assert trail.verify().ok
    curated = _curated(tmp_path, "nasa", "meteorites")
    published = tmp_path / "published" / "nasa" / "meteorites" / f"{DAY}.parquet"
    published_bytes = published.read_bytes()
    assert curated

    cut_to(trail, len(lines_of(trail)) - 2)
    trail.anchor_path.unlink()
    evidence = trail.path.read_bytes()
    deliver(tmp_path, "nasa", "meteorites", DAY, rows=90, seed=12)  # a new delivery
    deliver(tmp_path, "nga", "constituents", DAY, rows=40, seed=13)  # another agency

    for agency, dataset in (("nasa", "meteorites"), ("nga", "constituents")):
        result = materialize(tmp_path, [(agency, dataset)], DAY)
        assert not result.success
        message = _failure(result)
        assert "AuditAnchorMismatch" in message and STATE in message, message
        assert "flux audit verify" in message
    assert _curated(tmp_path, "nasa", "meteorites") == curated  # nothing committed
    assert published.read_bytes() == published_bytes  # nothing published
    assert _curated(tmp_path, "nga", "constituents") == []
    assert trail.path.read_bytes() == evidence  # the evidence stays as found

    # Once a human accepts the cut, loads (and their records) resume.
    accepted = runner.invoke(audit_app, ["anchor", "--accept", "--home", str(tmp_path)])
    assert accepted.exit_code == 0, accepted.output
    assert materialize(tmp_path, [("nasa", "meteorites")], DAY).success
    assert _curated(tmp_path, "nasa", "meteorites") != curated
    assert trail.verify().ok
