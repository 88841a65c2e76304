"""Record-level linking of two sources of the same entities (recipients, agencies) by name.

Three stages, most trusted first, each only on what the earlier ones left:
1. exact: the same raw name in the same block (e.g. the same agency);
2. normalised: the same ``normalise_name`` in the same block. Several left records may
   link to one right record (the left side often repeats an entity), but one normalised
   name shared by several right records is ambiguous and becomes an exception;
3. fuzzy: rapidfuzz token-sort ratio within blocks of the same first three, then (for what
   is still open) last three characters of the normalised name, so a typo at one end is
   still found. A best score >= ``accept`` that beats the runner-up by ``margin`` links,
   one-to-one (a right record goes to its best left); ``review`` <= score < ``accept``,
   a tie, or losing a right record to a better left is an exception for a person to judge.

Every left record ends in exactly one of matched, unmatched_left and exceptions; every
right record in matched or unmatched_right (being an exception's candidate does not link
it). Confidence is 1.0 for exact and normalised links, score / 100 for fuzzy ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from rapidfuzz import fuzz, process

from flux_pipelines.errors import ConfigurationError
from flux_pipelines.reconcile.names import normalise_name

MAX_CELLS = 50_000_000  # one cdist call never allocates more score cells than this
END = 3  # characters of the blocking keys


@dataclass(frozen=True)
class LinkSpec:
    left_id: str
    left_name: str
    right_id: str
    right_name: str
    left_block: str | None = None
    right_block: str | None = None


@dataclass(frozen=True)
class LinkSettings:
    accept: float = 90.0
    review: float = 80.0
    margin: float = 3.0


DEFAULT_SETTINGS = LinkSettings()


@dataclass(frozen=True)
class LinkResult:
    matched: pl.DataFrame  # left_id, right_id, left_name, right_name, block, method, confidence
    unmatched_left: pl.DataFrame
    unmatched_right: pl.DataFrame
    exceptions: pl.DataFrame  # left_id, left_name, right_id, right_name, block, score, reason


MATCHED_SCHEMA = pl.Schema({
    "left_id": pl.String, "right_id": pl.String, "left_name": pl.String,
    "right_name": pl.String, "block": pl.String, "method": pl.String, "confidence": pl.Float64,
})  # fmt: skip
EXCEPTION_SCHEMA = pl.Schema({
    "left_id": pl.String, "left_name": pl.String, "right_id": pl.String,
    "right_name": pl.String, "block": pl.String, "score": pl.Float64, "reason": pl.String,
})  # fmt: skip


def link_records(
    left: pl.DataFrame,
    right: pl.DataFrame,
    spec: LinkSpec,
    settings: LinkSettings = DEFAULT_SETTINGS,
) -> LinkResult:
    """Link ``left`` to ``right``; ids are compared as text."""
    lhs = _side(left, spec.left_id, spec.left_name, spec.left_block, "left")
    rhs = _side(right, spec.right_id, spec.right_name, spec.right_block, "right")
    matched, exceptions = _same_name(lhs, rhs)
    open_left = lhs.join(matched.select("left_id"), on="left_id", how="anti").join(
        exceptions.select("left_id"), on="left_id", how="anti"
    )
    open_right = rhs.join(matched.select(pl.col("right_id")), on="right_id", how="anti")
    fuzzy, fuzzy_exceptions = _fuzzy(open_left, open_right, settings)
    matched = pl.concat([matched, fuzzy])
    exceptions = pl.concat([exceptions, fuzzy_exceptions])
    resolved = pl.concat([matched.select("left_id"), exceptions.select("left_id")])
    return LinkResult(
        matched=matched,
        unmatched_left=left.join(
            lhs.join(resolved, on="left_id", how="anti").select("left_id", "norm"),
            left_on=pl.col(spec.left_id).cast(pl.String),
            right_on="left_id",
        ).drop("left_id"),
        unmatched_right=right.join(
            rhs.join(matched.select("right_id").unique(), on="right_id", how="anti").select(
                "right_id", "norm"
            ),
            left_on=pl.col(spec.right_id).cast(pl.String),
            right_on="right_id",
        ).drop("right_id"),
        exceptions=exceptions,
    )


def _side(
    frame: pl.DataFrame, id_column: str, name: str, block: str | None, side: str
) -> pl.DataFrame:
    wanted = [id_column, name] + ([block] if block else [])
    if missing := [c for c in wanted if c not in frame.columns]:
        raise ConfigurationError(f"{side} records lack column(s) {missing}; have {frame.columns}")
    out = frame.select(
        pl.col(id_column).cast(pl.String).alias(f"{side}_id"),
        pl.col(name).cast(pl.String).alias(f"{side}_name"),
        (pl.col(block).cast(pl.String).fill_null("") if block else pl.lit("")).alias("block"),
        normalise_name(pl.col(name)).alias("norm"),
    )
    if out[f"{side}_id"].is_duplicated().any():
        raise ConfigurationError(f"{side} record ids in {id_column!r} are not unique")
    return out


def _same_name(lhs: pl.DataFrame, rhs: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Stages 1 and 2: identical raw, then identical normalised names in one block."""
    pairs = lhs.filter(pl.col("norm") != "").join(
        rhs.filter(pl.col("norm") != ""), on=["block", "norm"]
    )
    pairs = pairs.with_columns(
        (pl.col("left_name") == pl.col("right_name")).alias("_exact"),
        pl.len().over("left_id").alias("_candidates"),
    ).with_columns(pl.col("_exact").sum().over("left_id").alias("_exacts"))
    chosen = pairs.filter(
        (pl.col("_candidates") == 1) | (pl.col("_exact") & (pl.col("_exacts") == 1))
    )
    matched = chosen.select(
        "left_id", "right_id", "left_name", "right_name", "block",
        pl.when(pl.col("_exact")).then(pl.lit("exact")).otherwise(pl.lit("normalised"))
        .alias("method"),
        pl.lit(1.0).alias("confidence"),
    )  # fmt: skip
    ambiguous = (
        pairs.join(chosen.select("left_id"), on="left_id", how="anti")
        .group_by("left_id", "left_name", "block", maintain_order=True)
        .agg(pl.col("right_id").first(), pl.col("right_name").first(), pl.len().alias("n"))
        .select(
            "left_id", "left_name", "right_id", "right_name", "block",
            pl.lit(100.0).alias("score"),
            pl.format("ambiguous: {} right records share the normalised name", "n")
            .alias("reason"),
        )
    )  # fmt: skip
    return matched.cast(MATCHED_SCHEMA), ambiguous.cast(EXCEPTION_SCHEMA)


def _fuzzy(
    lhs: pl.DataFrame, rhs: pl.DataFrame, settings: LinkSettings
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Stage 3: blocked rapidfuzz scores, two blocking passes, then the decision rules."""
    lhs = lhs.filter(pl.col("norm").str.len_chars() >= END)
    rhs = rhs.filter(pl.col("norm").str.len_chars() >= END)
    first = _candidates(lhs, rhs, pl.col("norm").str.head(END), settings)
    still_open = lhs.join(first.select("left_id"), on="left_id", how="anti")
    second = _candidates(still_open, rhs, pl.col("norm").str.tail(END), settings)
    winners, doubts = _decide(pl.concat([first, second]), settings)
    matched = _named(winners, lhs, rhs).select(
        "left_id", "right_id", "left_name", "right_name", "block",
        pl.lit("fuzzy").alias("method"), (pl.col("score") / 100).alias("confidence"),
    )  # fmt: skip
    exceptions = _named(doubts, lhs, rhs).select(list(EXCEPTION_SCHEMA))
    return matched.cast(MATCHED_SCHEMA), exceptions.cast(EXCEPTION_SCHEMA)


CANDIDATE_SCHEMA = {"left_id": pl.String, "right_id": pl.String, "score": pl.Float64,
                    "second": pl.Float64}  # fmt: skip


def _candidates(
    lhs: pl.DataFrame, rhs: pl.DataFrame, key: pl.Expr, settings: LinkSettings
) -> pl.DataFrame:
    """Best right record (score >= review) and the runner-up score, per left record."""
    left = lhs.with_columns((pl.col("block") + "\x1f" + key).alias("_key")).sort("_key")
    right = rhs.with_columns((pl.col("block") + "\x1f" + key).alias("_key")).sort("_key")
    shared = left.select("_key").unique().join(right.select("_key").unique(), on="_key")
    left = left.join(shared, on="_key", how="semi")
    right = right.join(shared, on="_key", how="semi")
    l_keys, r_keys = left["_key"].to_numpy(), right["_key"].to_numpy()
    l_norm, r_norm = left["norm"].to_list(), right["norm"].to_list()
    l_ids, r_ids = left["left_id"].to_numpy(), right["right_id"].to_numpy()
    l_bounds = _bounds(l_keys)
    r_bounds = _bounds(r_keys)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    for (ls, le), (rs, re) in zip(l_bounds, r_bounds, strict=True):
        step = max(1, MAX_CELLS // max(1, re - rs))
        for start in range(ls, le, step):
            stop = min(le, start + step)
            scores = process.cdist(
                l_norm[start:stop], r_norm[rs:re], scorer=fuzz.token_sort_ratio,
                score_cutoff=settings.review, dtype=np.uint8, workers=-1,
            )  # fmt: skip
            parts.append(_best_two(scores, l_ids[start:stop], r_ids[rs:re]))
    if not parts:
        return pl.DataFrame(schema=CANDIDATE_SCHEMA)
    lid, rid, best, second = (np.concatenate(p) for p in zip(*parts, strict=True))
    keep = best >= settings.review
    return pl.DataFrame(
        {"left_id": lid[keep], "right_id": rid[keep], "score": best[keep].astype(float),
         "second": second[keep].astype(float)},
        schema=CANDIDATE_SCHEMA,
    )  # fmt: skip


def _bounds(keys: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of equal keys in a sorted array."""
    if len(keys) == 0:
        return []
    change = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(keys)]])
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def _best_two(
    scores: np.ndarray, l_ids: np.ndarray, r_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    best_at = scores.argmax(axis=1)
    best = scores[np.arange(len(scores)), best_at]
    if scores.shape[1] > 1:
        second = np.partition(scores, -2, axis=1)[:, -2]
    else:
        second = np.zeros(len(scores), dtype=scores.dtype)
    return l_ids, r_ids[best_at], best, second


def _decide(candidates: pl.DataFrame, settings: LinkSettings) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Accept, review, ambiguous; then one-to-one on the accepted ones."""
    clear = (pl.col("score") >= settings.accept) & (
        pl.col("score") - pl.col("second") >= settings.margin
    )
    accepted = candidates.filter(clear).with_columns(
        pl.col("score").rank("min", descending=True).over("right_id").alias("_rank"),
        pl.len().over("right_id", "score").alias("_ties"),
        pl.col("score").max().over("right_id").alias("_best"),
    )
    winners = accepted.filter((pl.col("_rank") == 1) & (pl.col("_ties") == 1))
    losers = accepted.join(winners.select("left_id"), on="left_id", how="anti").select(
        "left_id", "right_id", "score",
        pl.format("right record already linked to a better or equal match (score {})",
                  pl.col("_best").cast(pl.Int64)).alias("reason"),
    )  # fmt: skip
    review = candidates.filter(~clear).select(
        "left_id", "right_id", "score",
        pl.when(pl.col("score") >= settings.accept)
        .then(pl.format("ambiguous: runner-up within {} points ({} vs {})",
                        pl.lit(settings.margin), pl.col("score").cast(pl.Int64),
                        pl.col("second").cast(pl.Int64)))
        .otherwise(pl.format("score {} between review {} and accept {}",
                             pl.col("score").cast(pl.Int64), pl.lit(settings.review),
                             pl.lit(settings.accept)))
        .alias("reason"),
    )  # fmt: skip
    return winners, pl.concat([losers, review])


def _named(frame: pl.DataFrame, lhs: pl.DataFrame, rhs: pl.DataFrame) -> pl.DataFrame:
    """Add names and block to (left_id, right_id, ...) rows."""
    return frame.join(lhs.select("left_id", "left_name", "block"), on="left_id").join(
        rhs.select("right_id", "right_name"), on="right_id"
    )
