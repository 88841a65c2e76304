"""Record-level linking: the stages, the four tables, precision and recall on labelled samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from flux_pipelines.bench.linking import SPEC, labelled_sources, perturb, quality
from flux_pipelines.errors import ConfigurationError
from flux_pipelines.reconcile.linking import LinkResult, LinkSpec, link_records
from flux_pipelines.reconcile.names import normalise_name


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("The Boeing Company", "BOEING CO"),
        ("Lockheed Martin Corp.", "LOCKHEED MARTIN CORPORATION"),
        ("A & B L.L.C.", "A AND B LLC"),
        ("U.S. Dept. of Defense", "United States Department of Defense"),
    ],
)
def test_normalised_names_are_equal(a: str, b: str) -> None:
    out = pl.DataFrame({"n": [a, b, None]}).select(normalise_name(pl.col("n")))["n"]
    assert out[0] == out[1] and out[2] is None


def _frame(rows: list[tuple[str, str, str]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=["id", "name", "agency"], orient="row")


def _assert_conserved(result: LinkResult, left: pl.DataFrame, right: pl.DataFrame) -> None:
    lefts = [
        *result.matched["left_id"],
        *result.unmatched_left["id"],
        *result.exceptions["left_id"],
    ]
    assert sorted(lefts) == sorted(left["id"])  # each left exactly once
    rights = [*result.matched["right_id"].unique(), *result.unmatched_right["id"]]
    assert sorted(rights) == sorted(right["id"])  # each right exactly once


def test_stages_blocks_one_to_one_and_exceptions() -> None:
    right = _frame([
        ("r1", "ACME BUILDERS INC", "dod"),
        ("r2", "ACME BUILDERS INC", "va"),
        ("r3", "ZENITH MEDICAL SUPPLY LLC", "dod"),
        ("r4", "ORION LOGISTICS CO", "dod"),
        ("r5", "ORION LOGISTICS COMPANY", "dod"),
        ("r6", "KESTREL ENGINEERING GROUP", "dod"),
        ("r7", "NIMBUS CONSULTING PARTNERS", "dod"),
    ])  # fmt: skip
    left = _frame([
        ("l1", "ACME BUILDERS INC", "dod"),  # exact, in dod's block only
        ("l2", "Acme Builders, Incorporated", "va"),  # normalised
        ("l3", "ZENITH MEDICAL SUPLY LLC", "dod"),  # fuzzy (typo)
        ("l4", "ZENITH MEDICL SUPPPLY LLC", "dod"),  # fuzzy too, loses r3 to l3
        ("l5", "orion logistics co.", "dod"),  # normalised twice over: ambiguous
        ("l6", "KESTREL ENGINEERING", "dod"),  # review band
        ("l7", "SOMETHING ELSE ENTIRELY", "dod"),  # nothing close
    ])  # fmt: skip
    result = link_records(left, right, LinkSpec("id", "name", "id", "name", "agency", "agency"))
    _assert_conserved(result, left, right)
    links = {r["left_id"]: (r["right_id"], r["method"]) for r in result.matched.to_dicts()}
    assert links == {"l1": ("r1", "exact"), "l2": ("r2", "normalised"), "l3": ("r3", "fuzzy")}
    assert 0.9 <= result.matched.filter(pl.col("method") == "fuzzy")["confidence"][0] < 1.0
    reasons = dict(zip(result.exceptions["left_id"], result.exceptions["reason"], strict=True))
    assert reasons["l4"].startswith("right record already linked to a better")
    assert reasons["l5"] == "ambiguous: 2 right records share the normalised name"
    assert (
        reasons["l6"].startswith("score ")
        and "between review 80.0 and accept 90.0" in reasons["l6"]
    )
    assert result.unmatched_left["id"].to_list() == ["l7"]
    assert set(result.unmatched_right["id"]) == {"r4", "r5", "r6", "r7"}


def test_bad_input_is_a_configuration_error() -> None:
    left = _frame([("l1", "A", "x"), ("l1", "B", "x")])
    with pytest.raises(ConfigurationError, match="not unique"):
        link_records(left, _frame([("r1", "A", "x")]), SPEC)
    with pytest.raises(ConfigurationError, match="lack column"):
        link_records(left.drop("agency"), _frame([("r1", "A", "x")]), SPEC)


def test_precision_and_recall_on_a_generated_labelled_sample() -> None:
    left, right = labelled_sources(3_000, seed=11)
    result = link_records(left, right, SPEC)
    _assert_conserved(result, left, right)
    q = quality(result, left, right)
    print(f"generated sample: precision {q['precision']:.4f}, recall {q['recall']:.4f}")
    assert q["true_pairs"] == 2_400
    assert q["precision"] >= 0.98
    assert q["recall"] >= 0.95


@pytest.mark.slow
@pytest.mark.realdata
def test_precision_and_recall_on_real_recipient_names(real_data: Path) -> None:
    """Real recipients of FY18 contracts, 1,600 respelled and 400 held out as distractors."""
    awards = pl.read_csv(
        real_data / "usaspending" / "awards_contracts_FY18_v2.csv",
        null_values=["NA"],
        infer_schema_length=0,
    )
    entities = (
        awards.select("agency", pl.col("recipient").alias("name"))
        .drop_nulls()
        .unique(maintain_order=True)
        .sample(2_400, seed=5)
        .with_columns(pl.int_range(pl.len()).alias("entity"))
    )
    right = entities.head(2_000).with_columns(pl.format("R{}", "entity").alias("id"))
    rng = np.random.default_rng(5)
    kept = right.head(1_600)
    left = pl.concat(
        [
            kept.with_columns(pl.Series("name", [perturb(n, rng) for n in kept["name"]])),
            entities.tail(400),
        ],
        how="diagonal",
    ).with_columns(pl.format("L{}", pl.int_range(pl.len())).alias("id"))
    result = link_records(left, right, SPEC)
    _assert_conserved(result, left, right)
    q = quality(result, left, right)
    print(f"real names: precision {q['precision']:.4f}, recall {q['recall']:.4f}")
    assert q["true_pairs"] == 1_600
    assert q["precision"] >= 0.97
    assert q["recall"] >= 0.90
