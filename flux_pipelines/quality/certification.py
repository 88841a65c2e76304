"""The certification gate: which agency-days may enter the cross-agency outputs.

Like the Broker's certification, a day whose anomaly monitors raised ERROR is held back
until a person overrides it; the override is an audit-trail record (who, why, when), so the
gate's only memory of a decision is the tamper-evident trail itself.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from flux_pipelines.audit.trail import AuditTrail, override_record
from flux_pipelines.contracts.ddl import PARTITION
from flux_pipelines.errors import ConfigurationError
from flux_pipelines.quality.scorecard import scorecard_glob

CHECK = "anomalies"


@dataclass(frozen=True)
class DayVerdict:
    agency: str
    dataset: str
    day: dt.date
    anomaly_severity: str | None
    summary: str
    overridden_by: str | None = None

    @property
    def certified(self) -> bool:
        return self.anomaly_severity != "ERROR" or self.overridden_by is not None


def day_verdicts(published_root: Path, trail: AuditTrail, dataset: str) -> list[DayVerdict]:
    """Every published agency-day of a dataset with its monitors' verdict and overrides."""
    import duckdb

    pattern = scorecard_glob(published_root).replace("'", "''")
    if not list(published_root.glob("*/_scorecard/*/*.parquet")):
        return []
    with duckdb.connect() as conn:
        rows = conn.execute(
            f"SELECT agency, {PARTITION}, anomaly_severity, coalesce(anomaly_summary, '') "
            f"FROM read_parquet('{pattern}', union_by_name = true) WHERE dataset = ? "
            "ORDER BY 1, 2",
            [dataset],
        ).fetchall()
    overrides = _overrides(trail, dataset)
    return [
        DayVerdict(a, dataset, d, sev, summary, overrides.get((a, d.isoformat())))
        for a, d, sev, summary in rows
    ]


def _overrides(trail: AuditTrail, dataset: str) -> dict[tuple[str, str], str]:
    if not trail.exists():
        return {}
    return {
        (str(e.agency), str(e.day)): str(e.payload.get("who", "?"))
        for e in trail.iter_records(kind="override", dataset=dataset)
    }


def override(
    published_root: Path,
    trail: AuditTrail,
    *,
    agency: str,
    dataset: str,
    day: dt.date,
    who: str,
    reason: str,
) -> DayVerdict:
    """Certify a held-back day; refuses days that are not held back (nothing to override)."""
    if not who.strip() or len(reason.strip()) < 10:
        raise ConfigurationError("an override needs who decided and a reason (10+ characters)")
    held = [
        v
        for v in day_verdicts(published_root, trail, dataset)
        if v.agency == agency and v.day == day
    ]
    if not held:
        raise ConfigurationError(f"no published {agency}/{dataset} delivery for {day}")
    verdict = held[0]
    if verdict.certified:
        state = "already overridden" if verdict.overridden_by else "not held back"
        raise ConfigurationError(f"{agency}/{dataset} {day} is {state}: nothing to override")
    trail.append(
        override_record(
            who.strip(),
            reason.strip(),
            agency=agency,
            dataset=dataset,
            day=day.isoformat(),
            overrides=f"{CHECK} ERROR: {verdict.summary}",
        )
    )
    return DayVerdict(agency, dataset, day, verdict.anomaly_severity, verdict.summary, who)
