"""The demo's story: the deliveries it makes unusual on purpose, by agency and dataset.

Why apart: this is data about the shipped demo agencies, not generation logic; the generic
modules apply whatever is listed here and name no dataset themselves.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PlantedAnomaly:
    """A delivery the demo makes unusual on purpose, and what the monitors must say."""

    agency: str
    dataset: str
    day_index: int  # which demo day (0 = the first)
    volume_factor: float  # share of the usual row count delivered
    severity: str  # WARN or ERROR, by DPLA's rules (drop >= 15% WARN, >= 30% ERROR)
    rule: str = "monitor.count_drop"


# One ERROR (held out of the cross-agency outputs by the certification gate) and one WARN.
DEMO_ANOMALIES = (
    PlantedAnomaly("national-archives", "media_items", 3, 0.55, "ERROR"),
    PlantedAnomaly("nasa", "meteorites", 5, 0.78, "WARN"),
)


def planted_anomalies(
    agencies: Sequence[str], days: Sequence[dt.date]
) -> dict[tuple[str, str, dt.date], PlantedAnomaly]:
    """The planted anomalies that fall within a demo's agencies and days."""
    return {
        (a.agency, a.dataset, days[a.day_index]): a
        for a in DEMO_ANOMALIES
        if a.agency in agencies and a.day_index < len(days)
    }
