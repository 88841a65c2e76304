"""The certification gate: which agency-days may enter the cross-agency outputs.

Like the Broker's certification, a day whose anomaly monitors raised ERROR is held back
until an operator overrides it; the override is an audit-trail record (who, why, when), so
the gate's only memory of a decision is the tamper-evident trail itself. Who comes from a
verified token (``Identity.label``), never from a string the caller types.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flux_pipelines.audit.trail import AuditTrail, override_record
from flux_pipelines.contracts.ddl import PARTITION
from flux_pipelines.errors import AccessDenied, ConfigurationError
from flux_pipelines.quality.scorecard import scorecard_glob
from flux_pipelines.sql import literal

if TYPE_CHECKING:  # the access modules load PyJWT: not for definitions, which read verdicts
    from flux_pipelines.access.identity import Identity
    from flux_pipelines.access.policy import AccessPolicy

CHECK = "anomalies"
ACTION = "quality_override"  # the access record's action


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

    pattern = literal(scorecard_glob(published_root))
    if not list(published_root.glob("*/_scorecard/*/*.parquet")):
        return []
    with duckdb.connect() as conn:
        rows = conn.execute(
            f"SELECT agency, {PARTITION}, anomaly_severity, coalesce(anomaly_summary, '') "
            f"FROM read_parquet({pattern}, union_by_name = true) WHERE dataset = ? "
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
    identity: Identity,
    reason: str,
    policy: AccessPolicy | None = None,
) -> DayVerdict:
    """Certify a held-back day in the name of a verified identity; only a role allowed to
    ``operate`` may (the policy's operators), checked here so every caller gets the check.

    A refusal is recorded (an ``access`` record, outcome ``denied``) before ``AccessDenied``
    is raised, and checked before the day is looked at, so a refused identity learns nothing
    about which days are held back. An override is appended together with its ``access``
    record (one write). Raises ``ConfigurationError`` for a day that is not held back.
    """
    from flux_pipelines.access.audit import record_access
    from flux_pipelines.access.identity import authorize

    where: dict[str, Any] = {"agency": agency, "dataset": dataset, "day": day}
    try:
        authorize(identity, "operate", agency, policy)
    except AccessDenied as exc:
        record_access(trail.home, identity, ACTION, "denied", **where, detail={"reason": exc.why})
        raise
    if len(reason.strip()) < 10:
        raise ConfigurationError("an override needs a reason (10+ characters)")
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
    overrides = f"{CHECK} ERROR: {verdict.summary}"
    decision = override_record(
        identity.label, reason.strip(), agency=agency, dataset=dataset, day=day, overrides=overrides
    )
    record_access(
        trail.home, identity, ACTION, "allowed", **where, detail={"overrides": overrides},
        records=[decision],
    )  # fmt: skip
    return DayVerdict(
        agency, dataset, day, verdict.anomaly_severity, verdict.summary, identity.label
    )
