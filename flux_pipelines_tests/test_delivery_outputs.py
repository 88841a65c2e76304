"""Each loaded partition leaves the agency's reports and audit records, through Dagster."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from typer.testing import CliRunner

from flux_pipelines.audit.trail import AuditTrail
from flux_pipelines.cli.main import app
from flux_pipelines.reports import BROKER_COLUMNS
from flux_pipelines_tests.conftest import deliver, materialize

DAY = "2026-02-03"


def _metadata(result, key: str) -> dict[str, object]:  # type: ignore[no-untyped-def]
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization  # type: ignore[union-attr]
        if mat.asset_key.to_user_string() == key:
            return dict(mat.metadata)
    raise AssertionError(f"no materialization of {key}")


def test_reports_and_audit_records_for_every_delivery(tmp_path: Path) -> None:
    planted = deliver(tmp_path, "nasa", "meteorites", DAY, rows=80, seed=11)
    result = materialize(tmp_path, [("nasa", "meteorites")], DAY)
    assert result.success and planted

    folder = tmp_path / "outbox" / "nasa" / "meteorites" / DAY
    with (folder / "error_report.csv").open(encoding="utf-8-sig", newline="") as handle:
        errors = list(csv.DictReader(handle))
    assert list(errors[0])[: len(BROKER_COLUMNS)] == list(BROKER_COLUMNS)
    assert {int(r["Row Number"]) for r in errors} == planted
    summary = (folder / "summary.html").read_text(encoding="utf-8")
    assert "nasa" in summary and "meteorites" in summary

    meta = _metadata(result, "nasa/meteorites_quarantine")
    assert meta["agency_report"].path == str(folder / "summary.html")  # type: ignore[attr-defined]
    assert meta["report_errors"].value == len(errors)  # type: ignore[attr-defined]

    trail = AuditTrail(tmp_path)
    kinds = [e.kind for e in trail.iter_records()]
    assert kinds[0] == "contract_version"
    assert {"delivery", "load", "quarantine", "publication", "report"} <= set(kinds)
    [load] = list(trail.iter_records(kind="load"))
    assert load.payload["rows_quarantined"] == len(planted)
    assert load.run_id == result.run_id and load.day == DAY
    assert trail.verify().ok

    # A second run applies the same contract: no second contract_version record.
    assert materialize(tmp_path, [("nasa", "meteorites")], DAY).success
    assert sum(1 for e in trail.iter_records(kind="contract_version")) == 1

    # Editing any record is detected by `flux audit verify`.
    path = tmp_path / "audit" / "trail.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[2])
    record["payload"]["rows_quarantined"] = 0 if record["kind"] == "load" else "edited"
    lines[2] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    verdict = CliRunner().invoke(app, ["audit", "verify", "--home", str(tmp_path)])
    assert verdict.exit_code == 1
    assert "edited" in verdict.output
