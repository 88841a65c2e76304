"""Improper-payment rules on hand-built transactions whose verdicts are known."""

from __future__ import annotations

import datetime as dt
import math

import polars as pl
import pytest

from flux_pipelines.risk.rules import (
    Columns,
    far_from_history,
    modification_out_of_order,
    reasons,
    row_rules,
    rules_score,
)

COLUMNS = Columns(uei="uei")


def _fired(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select(**row_rules(COLUMNS))


def test_row_rules() -> None:
    frame = pl.DataFrame(
        {
            "federal_action_obligation": [-5.0, 0.0, 25_000.0, 25_000.5, 9_000.0, None],
            "recipient_unique_id": ["000000000", "123456787", "12345", "80000000", None, "A1"],
            "uei": ["J7M9HPTGJ1S9", "O7M9HPTGJ1S9", "07M9HPTGJ1S9", "J7M9", None, "ZQGGHJH74DW7"],
        }
    )
    fired = _fired(frame)
    assert fired["obligation_not_positive"].to_list() == [True, True, False, False, False, False]
    assert fired["round_dollar"].to_list() == [False, False, True, False, False, False]
    assert fired["duns_placeholder"].to_list() == [True, True, False, False, False, False]
    # 80000000 is 080000000 with its leading zero lost in a number-typed export: not malformed
    assert fired["duns_malformed"].to_list() == [False, False, True, False, False, True]
    assert fired["uei_malformed"].to_list() == [False, True, True, True, False, False]


def test_modifications_dated_before_a_lower_number_are_out_of_order() -> None:
    d = [dt.date(2025, 1, day) for day in range(1, 6)]
    frame = pl.DataFrame(
        {
            "award_id": ["A", "A", "A", "A", "A", "B", "B", "C", "C", None],
            "modification_number": [
                "P00001", "P00003", "P00002", "P00004", "A00001", "0", "1", "P00002", "P00001", "1",
            ],
            "action_date": [d[0], d[1], d[2], d[2], d[3], d[1], d[0], d[4], d[4], d[0]],
        }
    )  # fmt: skip
    flagged = modification_out_of_order(frame, COLUMNS).to_list()
    # A's P00002 comes after P00003; B's 0 after 1; same-day C and other prefixes are fine
    assert flagged == [False, False, True, False, False, True, False, False, False, False]


def test_far_from_history_needs_history_and_spread() -> None:
    frame = pl.DataFrame(
        {
            "amount": [1_000.0, 100_000.0, 100_000.0, 2_500.0, 1_500.0, math.inf],
            "n": [10, 10, 3, 8, 8, 10],
            "mean": [math.log1p(1000)] * 3 + [math.log1p(1000)] * 2 + [math.log1p(1000)],
            "std": [0.2, 0.2, 0.2, 0.0, 0.0, 0.2],
        }
    )
    fires, z = far_from_history(pl.col("amount"), pl.col("n"), pl.col("mean"), pl.col("std"))
    out = frame.select(fires.alias("fires"), z.alias("z"))
    assert out["fires"].to_list() == [False, True, False, True, False, False]
    assert out["z"][1] == pytest.approx((math.log1p(100_000) - math.log1p(1000)) / 0.2)
    assert out["z"][2] is None and out["z"][3] is None  # too little history; no spread


def test_score_is_the_noisy_or_and_reasons_come_strongest_first() -> None:
    frame = pl.DataFrame(
        {
            "federal_action_obligation": [-20_000.0, 500.0],
            "recipient_unique_id": ["999999999", "080000000"],
        }
    )
    fired = row_rules(Columns())
    out = frame.select(rules_score(fired), reasons(fired))
    # placeholder 0.6, not positive 0.3, round dollar 0.2: 1 - 0.4 * 0.7 * 0.8
    assert out["rules_score"].to_list() == pytest.approx([1 - 0.4 * 0.7 * 0.8, 0.0])
    assert out["reasons"][0].to_list() == [
        "recipient DUNS is a placeholder",
        "obligation is zero or negative",
        "round-dollar amount (a multiple of $1,000 from $10,000)",
    ]
    assert out["reasons"][1].to_list() == []
