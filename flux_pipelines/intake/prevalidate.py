"""Pre-validation: ``flux validate``'s verdict on an uploaded file, as JSON, nothing landed.

The file is received into a scratch folder under ``<home>/state/intake/scratch/`` (same
disk as the home, removed after the verdict) and judged by ``reports.verdict.validate_file``,
the loader's own code path, so the answer is what a load would do.
"""

from __future__ import annotations

import datetime as dt
import shutil
import uuid
from pathlib import Path
from typing import Any

from flux_pipelines.ingest.confine import ConfinedDir, open_zone
from flux_pipelines.reports.verdict import CLEAN, QUARANTINED, REJECTED, Verdict, validate_file

MEANINGS = {
    CLEAN: ("clean", "every row would load"),
    QUARANTINED: ("quarantined", "some rows would be quarantined; the others would load"),
    REJECTED: ("rejected", "the file would be rejected whole"),
}
SCRATCH = ("state", "intake", "scratch")
MAX_SHOWN = 100


def scratch_folder(home: Path) -> ConfinedDir:
    """A fresh, private folder for one file under validation."""
    root = home.joinpath(*SCRATCH)
    return open_zone(root, [uuid.uuid4().hex], zone="intake scratch", create=True)


def remove_scratch(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def judge(
    path: Path, *, dataset: str, day: dt.date, agency: str | None, show: int
) -> dict[str, Any]:
    """The verdict document on ``path`` (the same meaning as ``flux validate``'s exit code)."""
    verdict = validate_file(path, dataset=dataset, day=day, agency=agency)
    return verdict_document(verdict, agency=agency, show=show)


def verdict_document(verdict: Verdict, *, agency: str | None, show: int) -> dict[str, Any]:
    """``agency`` None: the contract's own severities (an operator's check)."""
    r = verdict.result
    word, meaning = MEANINGS[verdict.exit_code]
    shown = verdict.violations.head(max(0, min(show, MAX_SHOWN)))
    return {
        "exit_code": verdict.exit_code,
        "verdict": word,
        "meaning": meaning,
        "dataset": r.dataset,
        "day": r.day.isoformat(),
        "agency": agency,
        "contract": {"id": r.contract.id, "version": r.contract.version},
        "rows": {
            "in": r.rows_in,
            "would_load": r.rows_curated,
            "would_quarantine": r.rows_quarantined,
            "with_warnings": r.rows_with_warnings,
        },
        "files": [
            {
                "file": f.file,
                "status": f.status,
                "sha256": f.sha256,
                "rule_id": f.rule_id,
                "reason": f.reason,
                "unmapped": f.unmapped,
                "missing": f.missing,
            }
            for f in r.files
        ],
        "rule_counts": dict(r.rule_counts.most_common()),
        "violations_total": verdict.violations.height,
        "violations": shown.to_dicts(),
    }
