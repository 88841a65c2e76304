"""Validation reports written back to the agency, in the DATA Act Broker's format.

``write_delivery_report`` writes one delivery day's ``error_report.csv``,
``warning_report.csv`` and ``summary.html`` to ``<outbox>/<agency>/<dataset>/<day>/``.
"""

from flux_pipelines.reports.broker import BROKER_COLUMNS, REPORT_COLUMNS
from flux_pipelines.reports.report import (
    ERROR_REPORT,
    SUMMARY,
    WARNING_REPORT,
    DeliveryReport,
    write_delivery_report,
)

__all__ = [
    "BROKER_COLUMNS",
    "ERROR_REPORT",
    "REPORT_COLUMNS",
    "SUMMARY",
    "WARNING_REPORT",
    "DeliveryReport",
    "write_delivery_report",
]
