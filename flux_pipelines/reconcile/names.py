"""Name normalisation shared by agency-name and recipient-name matching.

Sources spell the same organisation differently ("The Boeing Company", "BOEING CO",
"Lockheed Martin Corp."): case, punctuation, a leading "The" and the spelling of legal
suffixes carry no identity, so they are made equal before names are compared.
"""

from __future__ import annotations

import polars as pl

# Whole-token spellings made one (the longer phrases first: they are replaced in order).
CANONICAL: dict[str, str] = {
    "LIMITED LIABILITY COMPANY": "LLC",
    "UNITED STATES": "US",
    "INCORPORATED": "INC",
    "CORPORATION": "CORP",
    "COMPANY": "CO",
    "LIMITED": "LTD",
    "DEPARTMENT": "DEPT",
    "ASSOCIATES": "ASSOC",
    "SERVICES": "SVCS",
}


def normalise_name(expr: pl.Expr) -> pl.Expr:
    """Uppercase, '&' as AND, dotted abbreviations joined (L.L.C. -> LLC), other punctuation
    as spaces, a leading THE dropped, legal suffixes in one spelling; null stays null."""
    text = (
        expr.cast(pl.String)
        .str.to_uppercase()
        .str.replace_all("&", " AND ", literal=True)
        .str.replace_all(r"\b([A-Z])\.(?:([A-Z])\.)?(?:([A-Z])\.)?", "$1$2$3")
        .str.replace_all(r"[^A-Z0-9 ]+", " ")
        .str.replace_all(r"\s+", " ")
        .str.strip_chars()
        .str.replace(r"^THE ", "")
    )
    for long, short in CANONICAL.items():
        text = text.str.replace_all(rf"\b{long}\b", short)
    return text
