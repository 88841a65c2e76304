"""Seeded spending that behaves like spending: recipients with their own amounts and codes.

The generic generator makes every row a new recipient, which leaves nothing for risk
scoring to learn. Here each recipient has a typical obligation (log-normal, its own centre
and spread), a few usual NAICS and PSC codes, and a Zipf-like share of the transactions.
Anomalies are planted on request and labelled, so tests and the benchmark can measure
what the scoring finds. ``demo_realism`` is the spending dataset's demo plug-in
(``realism.py``): the generic generator calls it without knowing the dataset.
"""

from __future__ import annotations

import datetime as dt
import functools
import random
from dataclasses import dataclass

import numpy as np
import polars as pl

from flux_pipelines.demo.delivery import GeneratedDelivery
from flux_pipelines.demo.realism import Occasion, register

DEMO_RECIPIENTS = 400
SPENDING_DATASET = "contract_transactions"
ANOMALY_KINDS = ("far_amount", "new_industry", "placeholder_duns", "non_positive", "round_dollar")
CODES_PER_RECIPIENT = 3
CODE_SHARES = np.array([0.7, 0.2, 0.1])
OVERLAID = (
    "recipient_unique_id",
    "recipient_name",
    "federal_action_obligation",
    "naics_code",
    "product_or_service_code",
)
_WORDS = [
    "ACME",
    "APEX",
    "ATLAS",
    "BEACON",
    "CEDAR",
    "COASTAL",
    "DELTA",
    "EAGLE",
    "FRONTIER",
    "GRANITE",
    "HARBOR",
    "HIGHLAND",
    "KEYSTONE",
    "LIBERTY",
    "MERIDIAN",
    "NORTHSTAR",
    "PACIFIC",
    "PINNACLE",
    "RIVERSIDE",
    "SUMMIT",
    "TRIDENT",
    "VALLEY",
]
_TRADES = [
    "BUILDERS",
    "SYSTEMS",
    "SOLUTIONS",
    "LOGISTICS",
    "ENGINEERING",
    "MEDICAL",
    "TECHNOLOGIES",
    "SUPPLY",
]
_SUFFIXES = ("INC", "LLC", "CORPORATION", "CO", "GROUP INC")


@dataclass(frozen=True)
class Recipients:
    duns: np.ndarray  # 9-digit strings
    names: np.ndarray
    mu: np.ndarray  # centre of ln(obligation)
    sigma: np.ndarray  # spread of ln(obligation)
    naics: np.ndarray  # (n, 3) usual NAICS codes
    psc: np.ndarray  # (n, 3) usual PSC codes
    weights: np.ndarray  # share of transactions

    def __len__(self) -> int:
        return len(self.duns)


def recipients(n: int, seed: int) -> Recipients:
    rng = np.random.default_rng(seed)
    drawn = rng.integers(10_000_000, 999_999_999, size=2 * n + 10)
    _, first = np.unique(drawn, return_index=True)
    duns = drawn[np.sort(first)[:n]]  # distinct, in draw order (same seed, same ids)
    words = rng.choice(_WORDS, size=(n, 2))
    trades = rng.choice(_TRADES, size=n)
    suffixes = rng.choice(_SUFFIXES, size=n)
    names = np.array(
        [f"{a} {b} {t} {s} {i}" for i, (a, b, t, s) in
         enumerate(zip(words[:, 0], words[:, 1], trades, suffixes, strict=True))]
    )  # fmt: skip
    weights = 1.0 / np.arange(1, n + 1) ** 1.1
    return Recipients(
        duns=np.char.zfill(duns.astype(str), 9),
        names=names,
        mu=rng.normal(9.0, 1.5, size=n),
        sigma=rng.uniform(0.3, 0.8, size=n),
        naics=rng.integers(111_110, 999_990, size=(n, CODES_PER_RECIPIENT)).astype(str),
        psc=np.array(
            ["".join(c) for c in rng.choice(list("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"),
                                            size=(n * CODES_PER_RECIPIENT, 4))]
        ).reshape(n, CODES_PER_RECIPIENT),
        weights=rng.permutation(weights / weights.sum()),
    )  # fmt: skip


def transactions(
    people: Recipients,
    rows: int,
    *,
    day: dt.date,
    seed: int,
    anomaly_rate: float = 0.0,
    first_id: int = 1,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(typed transactions, planted anomalies as row index + kind)."""
    rng = np.random.default_rng(seed)
    who = rng.choice(len(people), size=rows, p=people.weights)
    amount = np.round(np.exp(rng.normal(people.mu[who], people.sigma[who])), 2)
    code = rng.choice(CODES_PER_RECIPIENT, size=rows, p=CODE_SHARES)
    duns = people.duns[who].copy()
    naics = people.naics[who, code].copy()
    psc = people.psc[who, code].copy()
    planted = np.flatnonzero(rng.random(rows) < anomaly_rate)
    kinds = rng.choice(len(ANOMALY_KINDS), size=len(planted))
    for kind_index, kind in enumerate(ANOMALY_KINDS):
        at = planted[kinds == kind_index]
        if kind == "far_amount":
            jump = rng.choice((-1.0, 1.0), size=len(at)) * rng.uniform(6, 8, size=len(at))
            amount[at] = np.round(np.exp(people.mu[who[at]] + jump * people.sigma[who[at]]), 2)
        elif kind == "new_industry":
            # a new line of business: an industry and a product the recipient never sold
            naics[at] = rng.integers(100_000, 111_100, size=len(at)).astype(str)
            psc[at] = [f"Z{v:03d}" for v in rng.integers(0, 999, size=len(at))]
        elif kind == "placeholder_duns":
            duns[at] = "123456787"
        elif kind == "non_positive":
            amount[at] = -amount[at] * rng.integers(0, 2, size=len(at))
        else:
            amount[at] = 1_000.0 * rng.integers(10, 500, size=len(at))
    frame = pl.DataFrame(
        {
            "transaction_id": np.arange(first_id, first_id + rows, dtype=np.int64),
            "award_id": rng.integers(1, 10 * rows + 10, size=rows),
            "modification_number": np.where(rng.random(rows) < 0.6, "0", "P00001"),
            "action_date": [day] * rows,
            "federal_action_obligation": amount,
            "recipient_unique_id": duns,
            "recipient_name": people.names[who],
            "naics_code": naics,
            "product_or_service_code": psc,
        }
    )
    labels = pl.DataFrame(
        {"row": planted.astype(np.int64), "kind": np.array(ANOMALY_KINDS)[kinds]},
        schema={"row": pl.Int64, "kind": pl.String},
    )
    return frame, labels


def overlay(
    delivery: GeneratedDelivery,
    people: Recipients,
    *,
    day: dt.date,
    seed: int,
    anomaly_rate: float = 0.02,
) -> GeneratedDelivery:
    """Give a generated delivery's clean rows real recipients (defect rows stay as planted)."""
    generated, _ = transactions(
        people, delivery.frame.height, day=day, seed=seed, anomaly_rate=anomaly_rate
    )
    planted = delivery.planted.get_column("row_number") - 1 - delivery.row_offset
    clean = ~pl.Series(range(delivery.frame.height)).is_in(planted.implode())
    return GeneratedDelivery(
        frame=delivery.frame.with_columns(
            pl.when(clean)
            .then(generated.get_column(column).cast(pl.String))
            .otherwise(pl.col(delivery.headers[column]))
            .alias(delivery.headers[column])
            for column in OVERLAID
        ),
        planted=delivery.planted,
        headers=delivery.headers,
        row_offset=delivery.row_offset,
    )


def demo_realism(delivery: GeneratedDelivery, occasion: Occasion) -> GeneratedDelivery:
    """The demo's spending: each agency pays its own recipients (seeded per agency), the
    delivery's amounts and codes drawn from its own stream."""
    agency_seed = random.Random(f"{occasion.seed}/{occasion.agency}").getrandbits(32)
    people = _demo_recipients(agency_seed)
    return overlay(delivery, people, day=occasion.day, seed=occasion.rng.getrandbits(63))


@functools.lru_cache(maxsize=16)
def _demo_recipients(agency_seed: int) -> Recipients:
    """An agency's recipients, drawn once per demo, not once per delivery (only read)."""
    return recipients(DEMO_RECIPIENTS, seed=agency_seed)


register(SPENDING_DATASET, demo_realism)
