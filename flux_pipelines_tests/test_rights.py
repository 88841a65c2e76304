"""Rights statements into Flux's rights vocabulary (issue 16, part A).

The table of statements below is the specification: each expected class was written by hand
from what the statement says (rightsstatements.org and Creative Commons semantics), not
computed by the code. The real-data tests read Tate's counts file and the Library of
Congress items independently of the classifier and compare outcomes with counts derived from
the files (and the data README's own figures).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import yaml

from flux_pipelines.collections.rights import RIGHTS_CLASSES, Rights, classify

# statement -> the class it states (hand-written)
STATEMENTS: list[tuple[str, str]] = [
    # public domain: CC0, the Public Domain Mark, dedications, plain statements
    ("https://creativecommons.org/publicdomain/zero/1.0/", "public_domain"),
    ("http://creativecommons.org/publicdomain/mark/1.0/", "public_domain"),
    ("CC0 1.0 Universal", "public_domain"),
    ("cc0", "public_domain"),
    ("Public Domain Mark 1.0", "public_domain"),
    ("Public Domain", "public_domain"),
    ("This work is in the public domain.", "public_domain"),
    ("https://unlicense.org/", "public_domain"),
    ("The Unlicense", "public_domain"),
    ("This is free and unencumbered software released into the public domain.", "public_domain"),
    ("The author has dedicated the work to the public domain.", "public_domain"),
    # Creative Commons licences, variant kept (URI, code and name)
    ("https://creativecommons.org/licenses/by/4.0/", "cc_by"),
    ("CC BY 4.0", "cc_by"),
    ("CC-BY", "cc_by"),
    ("Creative Commons Attribution 4.0 International", "cc_by"),
    ("https://creativecommons.org/licenses/by-sa/3.0/igo/", "cc_by_sa"),
    ("CC BY-SA 4.0", "cc_by_sa"),
    ("Attribution-ShareAlike 4.0 International", "cc_by_sa"),
    ("CC BY-ND 4.0", "cc_by_nd"),
    ("https://creativecommons.org/licenses/by-nc/4.0/", "cc_by_nc"),
    ("Creative Commons Attribution-NonCommercial 4.0 International License", "cc_by_nc"),
    ("cc by-nc-sa 2.0", "cc_by_nc_sa"),
    ("Attribution-NonCommercial-ShareAlike 4.0 International", "cc_by_nc_sa"),
    ("http://creativecommons.org/licenses/by-nc-nd/3.0/", "cc_by_nc_nd"),
    ("© Tate. Licensed CC BY-NC-ND 3.0 (Unported)", "cc_by_nc_nd"),  # holder + licence
    ("Attribution-NonCommercial-NoDerivatives 4.0 International", "cc_by_nc_nd"),
    ("Apache-2.0", "cc_by"),  # permissive software licence: use with the notice kept
    ("MIT License", "cc_by"),
    # in copyright
    ("© Tate", "in_copyright"),
    ("All Rights Reserved", "in_copyright"),
    ("(c) Smithsonian Institution. All rights reserved.", "in_copyright"),
    ("Copyright 2014 The Artist", "in_copyright"),
    ("© DACS, 2014", "in_copyright"),
    ("By permission of the estate of the artist", "in_copyright"),
    ("http://rightsstatements.org/vocab/InC/1.0/", "in_copyright"),
    ("https://rightsstatements.org/vocab/InC-NC/1.0/", "in_copyright"),
    ("In Copyright", "in_copyright"),
    # educational use
    ("http://rightsstatements.org/vocab/InC-EDU/1.0/", "in_copyright_educational"),
    ("In Copyright \u2013 Educational Use Permitted", "in_copyright_educational"),  # en dash
    # no known restrictions
    ("http://rightsstatements.org/vocab/NKC/1.0/", "no_known_restrictions"),
    ("No known restrictions on publication.", "no_known_restrictions"),
    ("No known copyright restrictions", "no_known_restrictions"),
    ("http://rightsstatements.org/vocab/NoC-US/1.0/", "no_known_restrictions"),
    ("This work is in the public domain in the United States.", "no_known_restrictions"),
    # the status is explicitly not known
    ("http://rightsstatements.org/vocab/CNE/1.0/", "unknown"),
    ("Copyright Undetermined", "unknown"),
    ("N/A", "unknown"),
    # statements Flux must not guess
    ("see the museum's web site", "unclassified"),
    ("Some rights reserved", "unclassified"),
    ("Not in the public domain", "unclassified"),
    ("CC BY 4.0. All rights reserved.", "unclassified"),  # grants and reserves at once
    ("CC BY-SA-ND", "unclassified"),  # ShareAlike and NoDerivs: no such licence
    ("https://creativecommons.org/licenses/sampling/1.0/", "unclassified"),
    ("http://rightsstatements.org/vocab/NoC-CR/1.0/", "unclassified"),  # restrictions remain
    ("http://rightsstatements.org/vocab/XYZ/1.0/", "unclassified"),
    (
        "https://creativecommons.org/licenses/by/4.0/ http://rightsstatements.org/vocab/InC/1.0/",
        "unclassified",
    ),  # two URIs of different classes
]


@pytest.mark.parametrize(("statement", "expected"), STATEMENTS)
def test_statement_classes(statement: str, expected: str) -> None:
    rights = classify(statement)
    assert rights.rights_class == expected, rights.reason
    assert rights.original == statement, "the original text is kept as delivered"
    assert rights.reason and "\n" not in rights.reason


@pytest.mark.parametrize("nothing", [None, "", "   "])
def test_no_statement_is_unknown_not_a_class_that_allows_use(nothing: str | None) -> None:
    rights = classify(nothing)
    assert (rights.rights_class, rights.reason, rights.stated) == (
        "unknown",
        "no rights statement",
        False,
    )
    assert rights.label() == "unknown"


def test_every_class_of_the_vocabulary_is_reached_by_some_statement() -> None:
    reached = {expected for _, expected in STATEMENTS}
    assert reached == set(RIGHTS_CLASSES)


def test_label_keeps_the_original_and_cuts_long_text() -> None:
    assert classify("© Tate").label() == "in_copyright (© Tate)"
    long = "© " + "The estate of somebody with a very long name " * 4
    label = classify(long).label()
    assert label.startswith("in_copyright (© The estate") and label.endswith("…)")
    assert len(label) < len(long)


def test_unclassified_says_why_and_keeps_the_value() -> None:
    rights = classify("CC BY 4.0. All rights reserved.")
    assert rights == Rights(
        "unclassified",
        "CC BY 4.0. All rights reserved.",
        "grants rights (Creative Commons BY licence) and reserves them in the same statement",
    )


# --- real data --------------------------------------------------------------------------------
def _tate_counts(real_data: Path) -> list[tuple[int, str | None]]:
    path = real_data / "collections" / "tate_thumbnailCopyright_counts.tsv"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [
        (int(r["count"]), None if r["thumbnailCopyright"] == "<null>" else r["thumbnailCopyright"])
        for r in rows
    ]


@pytest.mark.realdata
def test_every_distinct_tate_statement(real_data: Path) -> None:
    """Each of Tate's 125 distinct thumbnailCopyright values: null is unknown (no
    statement), every other one is a copyright line (©, All Rights Reserved, DACS, or by
    permission of an estate): in_copyright. Counts recomputed from the file itself."""
    counts = _tate_counts(real_data)
    assert len(counts) == 125
    copyright_line = re.compile(r"©|all rights reserved|\bdacs\b|permission of the estate", re.I)
    expected: dict[str, int] = {}
    for count, value in counts:
        rights = classify(value)
        if value is None:
            assert rights.rights_class == "unknown" and rights.reason == "no rights statement"
            want = "unknown"
        else:
            assert copyright_line.search(value), f"not a copyright line: {value!r}"
            assert rights.rights_class == "in_copyright", (value, rights.reason)
            assert rights.original == value
            want = "in_copyright"
        expected[want] = expected.get(want, 0) + count
    outcome: dict[str, int] = {}
    for count, value in counts:
        cls = classify(value).rights_class
        outcome[cls] = outcome.get(cls, 0) + count
    assert outcome == expected
    # the data README's own figures: null 3,524; "© Tate" 306; a third party's line 1,144
    tate = sum(c for c, v in counts if v == "© Tate")
    assert (expected["unknown"], tate, expected["in_copyright"] - tate) == (3524, 306, 1144)


def _loc_rights(real_data: Path) -> list[str]:
    folder = real_data / "collections" / "loc-citizen-dj" / "_items"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    statements = []
    for path in sorted(folder.rglob("*.md")):
        front = path.read_text(encoding="utf-8").split("---")[1]
        statements.append(yaml.safe_load(front)["rights"])
    return statements


@pytest.mark.realdata
def test_the_three_loc_rights_sentences(real_data: Path) -> None:
    """The Library of Congress's three sentences: the dedication is public domain, the two
    'free to use and reuse' grants are no known restrictions (rightsstatements.org NKC), each
    with the reason; counts as the data README gives them (132 / 89 / 52)."""
    statements = _loc_rights(real_data)
    distinct = sorted(set(statements))
    assert len(distinct) == 3 and len(statements) == 273
    by_class: dict[str, int] = {}
    for sentence in distinct:
        rights = classify(sentence)
        if "dedicated to the public domain" in sentence:
            assert rights.rights_class == "public_domain"
            assert rights.reason == "a dedication to the public domain"
        else:
            assert sentence.startswith("This sound recording is free to use and reuse.")
            assert rights.rights_class == "no_known_restrictions"
            assert "rightsstatements.org NKC" in rights.reason
        by_class[rights.rights_class] = by_class.get(rights.rights_class, 0) + statements.count(
            sentence
        )
    respect = sum(1 for s in statements if "asks that artists approach" in s)
    assert (by_class["public_domain"], respect, by_class["no_known_restrictions"] - respect) == (
        132,
        89,
        52,
    )
