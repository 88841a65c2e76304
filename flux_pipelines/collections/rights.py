"""Rights statements normalised into Flux's small rights vocabulary.

A collection states rights in free text ("© Tate", "All rights reserved", "This work has been
dedicated to the public domain ..."), in rightsstatements.org URIs or in Creative Commons
URIs and licence names. Use-case eligibility needs one answer per statement, so ``classify``
maps each to a ``RightsClass`` and keeps the original text and the reason beside it:

- ``public_domain``: an explicit public-domain statement: CC0, the Public Domain Mark, a
  dedication (the Unlicense, "dedicated to the public domain"), "public domain";
- ``cc_by``, ``cc_by_sa``, ``cc_by_nd``, ``cc_by_nc``, ``cc_by_nc_sa``, ``cc_by_nc_nd``: the
  Creative Commons licence, its variant kept (permissive software licences such as
  Apache-2.0 and MIT read as ``cc_by``: any use, provided the notice is kept);
- ``in_copyright``: a copyright notice (©, "All rights reserved", a rights society's line
  such as DACS or ADAGP, "by permission of the estate"), rightsstatements.org InC (and its
  non-commercial, orphan-work and unlocatable variants);
- ``in_copyright_educational``: rightsstatements.org InC-EDU;
- ``no_known_restrictions``: rightsstatements.org NKC and NoC-US (and "public domain in the
  United States": free of copyright there only, so not the unconditional public-domain
  statement ai-training needs), "no known restrictions", and the Library of Congress's "free
  to use and reuse" (see below);
- ``unknown``: no statement at all (or one saying the status is not evaluated/undetermined);
- ``unclassified``: a statement Flux could not classify. Never a guess: it is eligible for
  nothing and reported as a warning carrying the value, for a person to add a rule.

The Library of Congress's three citizen-dj sentences, and why:
- "This work has been dedicated to the public domain by its creator ..." is a public-domain
  dedication (like the Unlicense the repository itself uses): ``public_domain``.
- "This sound recording is free to use and reuse. You can copy, modify, distribute and
  perform the work, even for commercial purposes, all without asking permission. Attribution
  is recommended but not required." states no public-domain status and no licence: it says
  the Library knows of nothing restricting use, which is rightsstatements.org's "No Known
  Copyright" (NKC) meaning, hence ``no_known_restrictions``. It is not ``cc_by``:
  attribution is not a condition. It is not ``public_domain``: the status is not stated.
- The same sentence with "The American Folklife Center ... asks that artists approach the
  materials ... with respect" is the same grant plus an ethical request, not a legal
  condition ("asks"), so also ``no_known_restrictions``.

Rules are tried in order (the tables below) and the first that matches decides, so a more
explicit statement wins over a looser one ("dedicated to the public domain" before "free to
use", a CC licence before the © of its holder). A statement that both grants rights and
reserves them all ("CC BY ... All rights reserved") is ``unclassified``: it contradicts
itself.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal, get_args

RightsClass = Literal[
    "public_domain",
    "cc_by",
    "cc_by_sa",
    "cc_by_nd",
    "cc_by_nc",
    "cc_by_nc_sa",
    "cc_by_nc_nd",
    "in_copyright",
    "in_copyright_educational",
    "no_known_restrictions",
    "unknown",
    "unclassified",
]
RIGHTS_CLASSES: tuple[RightsClass, ...] = get_args(RightsClass)
# Classes that grant use of some kind without asking (the rest reserve rights or say nothing).
PERMISSIVE: frozenset[RightsClass] = frozenset(
    {"public_domain", "cc_by", "cc_by_sa", "cc_by_nd", "cc_by_nc", "cc_by_nc_sa", "cc_by_nc_nd",
     "no_known_restrictions"}
)  # fmt: skip
NO_STATEMENT = "no rights statement"
LABEL_CHARS = 80  # of the original text quoted in a label or reason


@dataclass(frozen=True)
class Rights:
    """A statement's class, the statement as delivered and why it got that class."""

    rights_class: RightsClass
    original: str | None
    reason: str

    @property
    def stated(self) -> bool:
        """Whether there is a statement at all (``unknown`` from nothing is no statement)."""
        return self.original is not None and bool(self.original.strip())

    def label(self) -> str:
        """``in_copyright (© Tate)``: the class and the original, cut to a readable length."""
        if not self.stated:
            return self.rights_class
        return f"{self.rights_class} ({shorten(self.original or '')})"


def shorten(text: str, limit: int = LABEL_CHARS) -> str:
    """One line of at most ``limit`` characters, marked when cut."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


# --- URIs -------------------------------------------------------------------------------------
# rightsstatements.org: https://rightsstatements.org/vocab/<code>/1.0/ (or /page/, /data/)
_RIGHTSSTATEMENTS_URI = re.compile(r"rightsstatements\.org/(?:vocab|page|data)/([a-z-]+)", re.I)
_RIGHTSSTATEMENTS: dict[str, tuple[RightsClass, str]] = {
    "inc": ("in_copyright", "rightsstatements.org In Copyright"),
    "inc-ow-eu": ("in_copyright", "rightsstatements.org In Copyright - EU Orphan Work"),
    "inc-edu": (
        "in_copyright_educational",
        "rightsstatements.org In Copyright - Educational Use Permitted",
    ),
    "inc-nc": ("in_copyright", "rightsstatements.org In Copyright - Non-Commercial Use Permitted"),
    "inc-ruu": ("in_copyright", "rightsstatements.org In Copyright - Rights-holder(s) Unlocatable"),
    "nkc": ("no_known_restrictions", "rightsstatements.org No Known Copyright"),
    "noc-us": (
        "no_known_restrictions",
        "rightsstatements.org No Copyright - United States: free of copyright in the United "
        "States only, not an unconditional public-domain statement",
    ),
    "cne": ("unknown", "rightsstatements.org Copyright Not Evaluated"),
    "und": ("unknown", "rightsstatements.org Copyright Undetermined"),
    # No copyright, but other restrictions: Flux's vocabulary has no class for them.
    "noc-cr": ("unclassified", "rightsstatements.org No Copyright - Contractual Restrictions"),
    "noc-nc": ("unclassified", "rightsstatements.org No Copyright - Non-Commercial Use Only"),
    "noc-oklr": (
        "unclassified",
        "rightsstatements.org No Copyright - Other Known Legal Restrictions",
    ),
}
# creativecommons.org/licenses/<code>/<version>/ and creativecommons.org/publicdomain/<tool>/
_CC_URI = re.compile(r"creativecommons\.org/(licenses|publicdomain)/([a-z0-9+-]+)", re.I)
_CC_PUBLIC_DOMAIN: dict[str, str] = {
    "zero": "CC0 public-domain dedication",
    "mark": "Public Domain Mark",
}
_UNLICENSE = "the Unlicense, a public-domain dedication"
_SOFTWARE = "a permissive software licence: any use provided the notice is kept, as CC BY"
_OTHER_URIS: tuple[tuple[re.Pattern[str], RightsClass, str], ...] = (
    (re.compile(r"unlicense\.org"), "public_domain", _UNLICENSE),
    (
        re.compile(
            r"(?:opensource\.org/licenses?|spdx\.org/licenses)/(?:mit|apache-2\.0|bsd-[23]-clause"
            r"|isc)\b|apache\.org/licenses/license-2\.0"
        ),
        "cc_by",
        _SOFTWARE,
    ),
)

# --- Creative Commons licence codes -----------------------------------------------------------
_CC_CODES: dict[frozenset[str], RightsClass] = {
    frozenset(): "cc_by",
    frozenset({"sa"}): "cc_by_sa",
    frozenset({"nd"}): "cc_by_nd",
    frozenset({"nc"}): "cc_by_nc",
    frozenset({"nc", "sa"}): "cc_by_nc_sa",
    frozenset({"nc", "nd"}): "cc_by_nc_nd",
}
_CC_TEXT_CODE = re.compile(r"\bcc[ -]?by((?:[ -](?:nc|sa|nd)\b)*)")
_CC_PARTS = r"((?:[ -]+(?:non-?commercial|share-?alike|no-?deriv\w*))*)"
_CC_TEXT_NAMES = (
    re.compile(r"\bcreative commons (?:license )?attribution" + _CC_PARTS),
    re.compile(r"\battribution" + _CC_PARTS + r"\s+(?:\d\.\d|international|generic|unported)\b"),
)
_CC_WORDS = {"nc": "nc", "sa": "sa", "nd": "nd"}


def _cc_parts(words: str) -> frozenset[str]:
    """``-nc-sa`` or ``-noncommercial-sharealike`` as {"nc", "sa"}."""
    parts: set[str] = set()
    for word in re.split(r"[ -]+", words.strip(" -")):
        if not word:
            continue
        if word in _CC_WORDS:
            parts.add(word)
        elif word.startswith("non"):
            parts.add("nc")
        elif word.startswith("share"):
            parts.add("sa")
        elif word.startswith("no"):
            parts.add("nd")
    return frozenset(parts)


def _cc_class(parts: frozenset[str], spelled: str) -> tuple[RightsClass, str]:
    rights_class = _CC_CODES.get(parts)
    if rights_class is None:
        return (
            "unclassified",
            f"Creative Commons {spelled!r} is no licence (ShareAlike and NoDerivs)",
        )
    code = "-".join(["BY", *(p.upper() for p in ("nc", "sa", "nd") if p in parts)])
    return rights_class, f"Creative Commons {code} licence"


# --- free text, tried in order; the first match decides -----------------------------------------
_Rule = tuple[re.Pattern[str], RightsClass, str]


def _rules(*rules: tuple[str, RightsClass, str]) -> tuple[_Rule, ...]:
    return tuple(
        (re.compile(pattern), rights_class, reason) for pattern, rights_class, reason in rules
    )


# Explicit statements: placeholders, rightsstatements.org labels, public-domain dedications.
_EXPLICIT = _rules(
    (r"^(?:none|null|n/?a|unknown|not stated|-+)$", "unknown", "a placeholder, no statement"),
    (
        r"\b(?:not|no longer)\s+(?:in\s+)?(?:the\s+)?public domain\b",
        "unclassified",
        "says the work is not in the public domain, without saying what it is instead",
    ),
    (
        r"\bin copyright\s*-\s*educational use permitted\b|\binc-edu\b",
        "in_copyright_educational",
        "rightsstatements.org In Copyright - Educational Use Permitted",
    ),
    (
        r"\bcopyright not evaluated\b|\bcopyright undetermined\b",
        "unknown",
        "says the copyright status was not evaluated or is undetermined",
    ),
    (
        r"\bno copyright\s*-\s*united states\b",
        "no_known_restrictions",
        "No Copyright - United States: free of copyright in the United States only",
    ),
    (
        r"\bno known (?:copyright|restrictions)\b",
        "no_known_restrictions",
        "states no known copyright or restrictions",
    ),
    (r"\bcc0\b|\bcc[ -]zero\b|\bcreative commons zero\b", "public_domain", "CC0 dedication"),
    (r"\bpublic domain mark\b", "public_domain", "Public Domain Mark"),
    (r"\bunlicen[sc]e\b", "public_domain", "the Unlicense, a public-domain dedication"),
    (
        r"\bdedicat\w*\b[^.;]{0,80}\bto the public domain\b"
        r"|\breleased? (?:in)?to the public domain\b|\bwaives? all (?:copyright|rights)\b",
        "public_domain",
        "a dedication to the public domain",
    ),
    (
        r"\bpublic domain in the (?:united states|u\.?s\.?a?\b)",
        "no_known_restrictions",
        "public domain in the United States only (as rightsstatements.org NoC-US)",
    ),
)
# Then Creative Commons licences by code or name (``_cc_text``), then looser wording.
_LOOSE = _rules(
    (
        r"\b(?:mit license|apache license|apache-2\.0|bsd-[23]-clause|isc license)\b",
        "cc_by",
        "a permissive software licence: any use provided the notice is kept, as CC BY",
    ),
    (r"\bpublic domain\b", "public_domain", "states the work is in the public domain"),
    (
        r"\bfree to use (?:and|or) reuse\b",
        "no_known_restrictions",
        "free to use and reuse without asking permission: no known restrictions "
        "(rightsstatements.org NKC), not a public-domain statement",
    ),
    (r"\bin copyright\b", "in_copyright", "states the work is in copyright"),
    (r"(?<!some )\brights reserved\b", "in_copyright", "reserves all rights"),
    (
        r"©|\(c\)\s*(?:\d{4}|[a-z])|\bcopyright\s*(?:©|\(c\)|\d{4}|by\b|of\b)",
        "in_copyright",
        "a copyright notice",
    ),
    (
        r"\b(?:dacs|adagp|artists rights society|vaga|bridgeman)\b|\bars, (?:ny|new york)\b",
        "in_copyright",
        "a rights society's or agent's licence line (third-party copyright)",
    ),
    (
        r"\bby (?:kind )?permission of\b|\bestate of\b|\bsuccession\b|\bcourtesy of\b",
        "in_copyright",
        "reproduced by permission of a third party who holds the rights",
    ),
)
_RESERVES_ALL = re.compile(r"(?<!some )\b(?:all )?rights reserved\b|\bin copyright\b")
_DASHES = re.compile(r"[\u2010-\u2015\u2212]")


def normalise(statement: str) -> str:
    """Lowercase, one space between words, every dash a hyphen: what the rules match."""
    text = _DASHES.sub("-", unicodedata.normalize("NFKC", statement)).casefold()
    return " ".join(text.split())


@functools.lru_cache(maxsize=8192)
def classify(statement: str | None) -> Rights:
    """The statement's rights class, with the original text and the reason.

    None or blank is ``unknown`` ("no rights statement"); a statement no rule recognises is
    ``unclassified`` (reported, never guessed)."""
    if statement is None or not statement.strip():
        return Rights("unknown", None, NO_STATEMENT)
    text = normalise(statement)
    found = _from_uris(text) or _from_text(text)
    if found is None:
        return Rights("unclassified", statement, "a statement Flux does not recognise")
    rights_class, reason = found
    if rights_class in PERMISSIVE and _RESERVES_ALL.search(text):
        return Rights(
            "unclassified",
            statement,
            f"grants rights ({reason}) and reserves them in the same statement",
        )
    return Rights(rights_class, statement, reason)


def _from_uris(text: str) -> tuple[RightsClass, str] | None:
    """The class the statement's rights URIs give; ``unclassified`` when they disagree or
    one is a rightsstatements.org / Creative Commons URI Flux does not know."""
    found: list[tuple[RightsClass, str]] = []
    for match in _RIGHTSSTATEMENTS_URI.finditer(text):
        found.append(
            _RIGHTSSTATEMENTS.get(
                match[1].rstrip("-"),
                ("unclassified", f"a rightsstatements.org code Flux does not know ({match[1]})"),
            )
        )
    for match in _CC_URI.finditer(text):
        found.append(_cc_uri(match[1], match[2]))
    for pattern, rights_class, reason in _OTHER_URIS:
        if pattern.search(text):
            found.append((rights_class, reason))
    classes = {c for c, _ in found}
    if len(classes) > 1:
        named = "; ".join(f"{c}: {r}" for c, r in found)
        return "unclassified", f"names rights of different classes ({named})"
    return found[0] if found else None


def _cc_uri(kind: str, code: str) -> tuple[RightsClass, str]:
    if kind == "publicdomain":
        if code in _CC_PUBLIC_DOMAIN:
            return "public_domain", _CC_PUBLIC_DOMAIN[code]
        return "unclassified", f"a Creative Commons public-domain tool Flux does not know ({code})"
    if code == "publicdomain":  # the retired licenses/publicdomain/ dedication
        return "public_domain", "Creative Commons public-domain dedication"
    match = re.fullmatch(r"by((?:-(?:nc|sa|nd))*)", code)
    if match is None:
        return "unclassified", f"a Creative Commons licence Flux does not know ({code})"
    return _cc_class(_cc_parts(match[1]), code)


def _from_text(text: str) -> tuple[RightsClass, str] | None:
    return _first(_EXPLICIT, text) or _cc_text(text) or _first(_LOOSE, text)


def _first(rules: tuple[_Rule, ...], text: str) -> tuple[RightsClass, str] | None:
    for pattern, rights_class, reason in rules:
        if pattern.search(text):
            return rights_class, reason
    return None


def _cc_text(text: str) -> tuple[RightsClass, str] | None:
    """A Creative Commons licence by code (``CC BY-NC-SA 4.0``) or name (``Creative Commons
    Attribution-NonCommercial 4.0``)."""
    for pattern in (_CC_TEXT_CODE, *_CC_TEXT_NAMES):
        match = pattern.search(text)
        if match:
            return _cc_class(_cc_parts(match[1]), match[0])
    return None
