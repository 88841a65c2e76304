"""score_transactions on hand-built days whose verdicts are known."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest

from flux_pipelines.risk.features import FEATURE_COLUMNS
from flux_pipelines.risk.model import train
from flux_pipelines.risk.scoring import History, ScoringSettings, score_transactions

DAY = dt.date(2025, 6, 2)
DUNS = "080000001"


def _day(amounts: list[float], **overrides: list[object]) -> pl.DataFrame:
    n = len(amounts)
    columns: dict[str, list[object]] = {
        "transaction_id": list(range(1, n + 1)),
        "award_id": list(range(100, 100 + n)),
        "modification_number": ["0"] * n,
        "action_date": [DAY] * n,
        "federal_action_obligation": amounts,
        "recipient_unique_id": [DUNS] * n,
        "recipient_name": ["ACME"] * n,
        "naics_code": ["236220"] * n,
        "product_or_service_code": ["Y1AA"] * n,
    }
    columns.update(overrides)
    return pl.DataFrame(columns)


def _history(n: int, mean_amount: float, std_log: float) -> History:
    empty = History.empty()
    return History(
        amounts=pl.DataFrame(
            {"recipient": [DUNS], "n": [n], "mean": [math.log1p(mean_amount)], "std": [std_log]}
        ),
        codes=pl.DataFrame(
            {"recipient": [DUNS] * 2, "kind": ["naics", "psc"], "code": ["236220", "Y1AA"],
             "n": [n, n]}
        ),
        modifications=empty.modifications,
    )  # fmt: skip


def test_far_from_history_and_new_codes_are_reasons() -> None:
    history = _history(40, 50_000.0, 0.3)
    day = _day(
        [50_500.0, 5_000_123.45, 51_234.5, 49_321.0],
        naics_code=["236220", "236220", "621111", "236220"],
        product_or_service_code=["Y1AA", "Y1AA", "Q201", "Y1AA"],
        recipient_unique_id=[DUNS, "80000001", DUNS, "123456787"],
    )
    scores = score_transactions(day, history, None)
    fired = scores["rules_fired"].to_list()
    assert fired[0] == []
    # 80000001 is the same recipient with its leading zero lost: its history still applies
    assert fired[1] == ["far_from_recipient_history"]
    assert "SD from the recipient's history (typical 50000.0, n = 40)" in scores["reasons"][1][0]
    assert sorted(fired[2]) == ["naics_new_for_recipient", "psc_new_for_recipient"]
    assert scores["reasons"][2][0].startswith("NAICS 621111 new for this recipient")
    assert fired[3] == ["duns_placeholder"]  # a placeholder has no history of its own
    assert scores["flagged"].to_list() == [False, True, True, True]
    assert (scores["score_basis"] == "rules_only").all()
    assert scores["model_score"].null_count() == 4


def test_constant_history_nan_and_infinite_amounts_do_not_break_scoring() -> None:
    history = _history(10, 1_000.0, 0.0)  # every earlier obligation was exactly $1,000
    day = _day([1_000.0, 1_900.0, 2_100.0, math.nan, math.inf, None])  # type: ignore[list-item]
    scores = score_transactions(day, history, None)
    far = ["far_from_recipient_history" in f for f in scores["rules_fired"].to_list()]
    assert far == [False, False, True, False, False, False]  # beyond x2 of a constant history
    assert scores.select(pl.col(FEATURE_COLUMNS).is_finite().all()).row(0) == (True,) * len(
        FEATURE_COLUMNS
    )


def test_a_modification_dated_before_an_earlier_delivered_lower_number() -> None:
    empty = History.empty()
    history = History(
        amounts=empty.amounts,
        codes=empty.codes,
        modifications=pl.DataFrame(
            {"award": [7, 7], "modification": ["P00001", "P00003"],
             "action_date": [DAY - dt.timedelta(days=9), DAY + dt.timedelta(days=1)]}
        ),
    )  # fmt: skip
    day = _day([10.0, 10.0], award_id=[7, 8], modification_number=["P00002", "P00002"])
    scores = score_transactions(day, history, None)
    # P00002 signed before P00003 is in order; nothing earlier on award 7 has a higher number
    assert scores["rules_fired"].to_list() == [[], []]
    late = _day([10.0], award_id=[7], modification_number=["P00002"],
                action_date=[DAY + dt.timedelta(days=5)])  # fmt: skip
    fired = score_transactions(late, history, None)["rules_fired"].to_list()
    assert fired == [["modification_out_of_order"]]


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_blended_score_is_alpha_model_plus_rest_rules(alpha: float) -> None:
    rng = np.random.default_rng(3)
    vectors = pl.DataFrame({c: rng.normal(size=2_000) for c in FEATURE_COLUMNS})
    model = train(vectors, n_estimators=20)
    day = _day([50_000.0, -10.0, 25_000.0])
    scores = score_transactions(day, _history(40, 50_000.0, 0.3), model, ScoringSettings(alpha))
    expected = alpha * scores["model_score"] + (1 - alpha) * scores["rules_score"]
    assert (scores["risk_score"] - expected).abs().max() < 1e-12
    assert (scores["model_version"] == model.version).all()
    assert (scores.filter(pl.col("flagged"))["reasons"].list.len() > 0).all()
