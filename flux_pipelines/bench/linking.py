"""Linking speed and quality: two sources of 1M records each, with a known truth.

Names are seeded company names (pronounceable words, a trade, a legal suffix) spread over
50 agencies (the blocks). The left source holds 80% of the right's entities, 30% of those
spelled differently (suffix variants, punctuation, a one-character typo, a dropped or added
"THE", word order, case), plus 20% entities of its own. Precision and recall are measured
against that truth; the same generator builds the labelled samples of the tests.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from flux_pipelines.bench.memory import peak_rss_mb, reset_peak
from flux_pipelines.reconcile.linking import LinkResult, LinkSpec, link_records

SYLLABLES = [
    "ab",
    "ac",
    "al",
    "am",
    "an",
    "ar",
    "as",
    "at",
    "ba",
    "be",
    "bo",
    "ca",
    "ce",
    "co",
    "da",
    "de",
    "di",
    "do",
    "el",
    "en",
    "er",
    "fa",
    "fi",
    "fo",
    "ga",
    "ge",
    "go",
    "ha",
    "he",
    "ho",
    "in",
    "ka",
    "ke",
    "ko",
    "la",
    "le",
    "li",
    "lo",
    "ma",
    "me",
    "mi",
    "mo",
    "na",
    "ne",
    "no",
    "or",
    "pa",
    "pe",
    "po",
    "ra",
    "re",
    "ri",
    "ro",
    "sa",
    "se",
    "so",
    "ta",
    "te",
    "ti",
    "to",
    "un",
    "va",
    "ve",
    "vi",
    "vo",
    "za",
    "ze",
]
TRADES = (
    "BUILDERS",
    "SYSTEMS",
    "SOLUTIONS",
    "LOGISTICS",
    "ENGINEERING",
    "MEDICAL",
    "TECHNOLOGIES",
    "SUPPLY",
    "CONSULTING",
    "MANUFACTURING",
    "HOLDINGS",
    "SERVICES",
)
SUFFIXES = ("INC", "LLC", "CORP", "CO", "LTD", "CORPORATION", "INCORPORATED", "COMPANY")
SUFFIX_VARIANTS = {
    "INC": "INCORPORATED",
    "INCORPORATED": "INC.",
    "CORP": "CORPORATION",
    "CORPORATION": "CORP.",
    "CO": "COMPANY",
    "COMPANY": "CO.",
    "LLC": "L.L.C.",
    "LTD": "LIMITED",
}
SCHEMA = {"id": pl.String, "name": pl.String, "agency": pl.String, "entity": pl.Int64}
SPEC = LinkSpec("id", "name", "id", "name", "agency", "agency")


def company_names(n: int, seed: int) -> list[str]:
    """Distinct, seeded, company-like names."""
    rng = np.random.default_rng(seed)
    names: dict[str, None] = {}
    while len(names) < n:
        batch = n - len(names) + 100
        words = [
            " ".join(
                "".join(rng.choice(SYLLABLES, size=rng.integers(2, 4))).upper()
                for _ in range(rng.integers(1, 3))
            )
            for _ in range(batch)
        ]
        trades = rng.choice(TRADES, size=batch)
        suffixes = rng.choice(SUFFIXES, size=batch)
        for w, t, s in zip(words, trades, suffixes, strict=True):
            names.setdefault(f"{w} {t} {s}", None)
    return list(names)[:n]


def perturb(name: str, rng: np.random.Generator) -> str:
    """One or two of the spellings sources really differ by."""
    out = name
    for change in rng.choice(6, size=rng.integers(1, 3), replace=False):
        words = out.split()
        if change == 0 and words[-1].rstrip(".") in SUFFIX_VARIANTS:
            words[-1] = SUFFIX_VARIANTS[words[-1].rstrip(".")]
        elif change == 1:
            words = [w + "," if i == len(words) - 2 else w for i, w in enumerate(words)]
        elif change == 2:
            words = _typo(words, rng)
        elif change == 3:
            words = words[1:] if words[0] == "THE" else ["THE", *words]
        elif change == 4 and len(words) > 3:
            words[0], words[1] = words[1], words[0]
        elif change == 5:
            return " ".join(words).title()
        out = " ".join(words)
    return out


def _typo(words: list[str], rng: np.random.Generator) -> list[str]:
    long = [i for i, w in enumerate(words) if len(w) >= 5]
    if not long:
        return words
    i = int(rng.choice(long))
    w = words[i]
    at = int(rng.integers(1, len(w) - 1))
    kind = rng.integers(3)
    if kind == 0:  # substitution
        w = w[:at] + chr(ord("A") + int(rng.integers(26))) + w[at + 1 :]
    elif kind == 1:  # deletion
        w = w[:at] + w[at + 1 :]
    else:  # transposition
        w = w[: at - 1] + w[at] + w[at - 1] + w[at + 1 :]
    return [*words[:i], w, *words[i + 1 :]]


def labelled_sources(
    rows: int, seed: int, *, shared: float = 0.8, changed: float = 0.3, agencies: int = 50
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(left, right) with an ``entity`` column: equal entity = the same organisation."""
    rng = np.random.default_rng(seed)
    names = company_names(rows + int(rows * (1 - shared)) + 1, seed)
    agency = rng.integers(0, agencies, size=len(names)).astype(str)
    right = pl.DataFrame(
        {
            "id": [f"R{i}" for i in range(rows)],
            "name": names[:rows],
            "agency": agency[:rows],
            "entity": np.arange(rows),
        },
        schema=SCHEMA,
    )
    kept = rng.choice(rows, size=int(rows * shared), replace=False)
    spelled = [
        perturb(names[i], rng) if rng.random() < changed else names[i] for i in kept.tolist()
    ]
    own = np.arange(rows, rows + (rows - len(kept)))
    left = pl.DataFrame(
        {
            "id": [f"L{i}" for i in range(rows)],
            "name": spelled + [names[i] for i in own.tolist()],
            "agency": np.concatenate([agency[kept], agency[own]]),
            "entity": np.concatenate([kept, own]),
        },
        schema=SCHEMA,
    )
    return left, right


def quality(result: LinkResult, left: pl.DataFrame, right: pl.DataFrame) -> dict[str, float]:
    """Precision = correct links / links made; recall = correct links / true pairs."""
    truth = left.select(pl.col("id").alias("left_id"), "entity").join(
        right.select(pl.col("id").alias("right_id"), "entity"), on="entity"
    )
    links = result.matched.select("left_id", "right_id")
    correct = links.join(truth, on=["left_id", "right_id"]).height
    return {
        "precision": correct / max(1, links.height),
        "recall": correct / max(1, truth.height),
        "links": links.height,
        "true_pairs": truth.height,
    }


def run_linking_bench(workdir: Path, rows: int = 1_000_000, seed: int = 7) -> list[str]:
    reset_peak()
    started = time.perf_counter()
    left, right = labelled_sources(rows, seed)
    generated = time.perf_counter() - started
    started = time.perf_counter()
    result = link_records(left, right, SPEC)
    seconds = time.perf_counter() - started
    q = quality(result, left, right)
    methods = dict(result.matched.group_by("method").len().sort("method").iter_rows())
    peak = peak_rss_mb()
    return [
        f"linking {rows:,} x {rows:,} records (50 agency blocks; generated in {generated:.1f}s)",
        f"  linked in {seconds:.1f}s ({2 * rows / seconds:,.0f} records/s; target <= 60 s for "
        f"1M x 1M); peak memory {peak:,.0f} MB",
        f"  matched {result.matched.height:,} {methods}, exceptions "
        f"{result.exceptions.height:,}, unmatched left {result.unmatched_left.height:,}, "
        f"unmatched right {result.unmatched_right.height:,}",
        f"  precision {q['precision']:.4f}, recall {q['recall']:.4f} "
        f"({q['true_pairs']:,} true pairs)",
    ]


if __name__ == "__main__":
    for line in run_linking_bench(Path("."), int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000):
        print(line)
