"""A generated delivery: its text frame, its headers, and the defects planted in it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from flux_pipelines.contracts.model import Contract
from flux_pipelines.names import FILE, ROW

PLANTED_SCHEMA: dict[str, pl.DataType] = {"row_number": pl.Int64(), "rule_id": pl.String()}


@dataclass(frozen=True, eq=False)
class GeneratedDelivery:
    """A generated delivery and the defects planted in it (row numbers are 1-based)."""

    frame: pl.DataFrame  # all Utf8, headers as delivered (first source name if any)
    planted: pl.DataFrame  # row_number Int64, rule_id str
    headers: Mapping[str, str]  # contract column -> delivered header
    row_offset: int = 0

    def contract_frame(self, file: str = "") -> pl.DataFrame:
        """The frame as RowValidator takes it: contract column names plus FILE and ROW."""
        back = {header: name for name, header in self.headers.items()}
        first = self.row_offset + 1
        return self.frame.rename(back).with_columns(
            pl.lit(file).alias(FILE),
            pl.int_range(first, first + self.frame.height, dtype=pl.Int64).alias(ROW),
        )


def delivered_headers(contract: Contract, source_headers: bool = True) -> dict[str, str]:
    """Header per column: the first source spelling when there is one (as agencies send)."""
    return {
        c.name: (c.source_names[0] if source_headers and c.source_names else c.name)
        for c in contract.columns
    }
