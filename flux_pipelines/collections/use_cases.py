"""Use cases as data (``contracts/use_cases.yaml``) and who may use which record or file.

A decision is ``Decision(eligible, reasons)``, the reasons written as sentences an agency and
an analyst can read: "not eligible for ai-training: no rights statement", "not eligible for
ai-training: content rights in_copyright (© Tate)". The rules:

- **No statement, no use.** A record or file is eligible only on an explicit statement whose
  rights class the use case lists; ``unknown`` and ``unclassified`` never qualify.
- **Records** are judged on what they state: the content rights (the contract's
  ``rightsColumn``), the metadata licence (``metadataLicence`` or its column) and the
  content type (``contentType`` or ``contentTypeColumn``). Pixel sizes are a file's, so a
  use case's ``min_side_pixels`` is checked by ``file_eligibility``; an export takes a record
  eligible *and* its files eligible.
- **Files** are judged on their content: the type detected from their bytes, width and
  height, and every rights statement about them (the record's, the file's own sidecar, the
  repository's licence). The most specific statement (sidecar, then record, then
  repository) is the file's content rights. **Contradiction rule:** when stated sources fall
  in different classes, the file is not eligible for any use case that either class would
  forbid, and the contradiction is the reason ("content rights contradict the repository
  licence (sidecar: in_copyright (...); repository licence: cc_by (Apache-2.0))").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from flux_pipelines.collections.rights import Rights, RightsClass, classify, shorten
from flux_pipelines.config_files import load_model
from flux_pipelines.contracts.model import ContentMapping, ContentType
from flux_pipelines.errors import ConfigurationError

if TYPE_CHECKING:
    pass

USE_CASES_FILE = "use_cases.yaml"
CONTENT_TYPES: tuple[ContentType, ...] = get_args(ContentType)
NEVER_ELIGIBLE: frozenset[RightsClass] = frozenset({"unknown", "unclassified"})


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class UseCase(_Strict):
    """One use case and what a record or file needs to be eligible for it."""

    id: str = Field(pattern=r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
    description: str
    content_rights: tuple[RightsClass, ...] = Field(min_length=1)
    metadata_licence: tuple[RightsClass, ...] = Field(min_length=1)
    content_types: tuple[ContentType, ...] | None = None
    min_side_pixels: int | None = Field(default=None, gt=0)

    @field_validator("content_rights", "metadata_licence")
    @classmethod
    def _explicit_only(cls, value: tuple[RightsClass, ...]) -> tuple[RightsClass, ...]:
        never = sorted(NEVER_ELIGIBLE & set(value))
        if never:
            raise ValueError(
                f"{', '.join(never)} can never make a record eligible (no statement means not "
                "eligible; an unclassified statement is reported, not used): remove it"
            )
        return value


class UseCases(_Strict):
    """The use-case file: a version and the use cases, each id once."""

    version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    use_cases: tuple[UseCase, ...] = Field(min_length=1)

    @field_validator("use_cases")
    @classmethod
    def _unique_ids(cls, value: tuple[UseCase, ...]) -> tuple[UseCase, ...]:
        ids = [u.id for u in value]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"use case ids must be unique; repeated: {', '.join(twice)}")
        return value

    def get(self, use_case_id: str) -> UseCase:
        for use_case in self.use_cases:
            if use_case.id == use_case_id:
                return use_case
        known = ", ".join(u.id for u in self.use_cases)
        raise ConfigurationError(f"unknown use case {use_case_id!r}; known: {known}")


def load_use_cases(path: Path | None = None) -> UseCases:
    """``contracts/use_cases.yaml`` (of the contracts folder in use), validated; a bad file
    is a ``ConfigurationError`` naming the file and each bad entry."""
    if path is None:
        from flux_pipelines.contracts.registry import contracts_dir

        path = contracts_dir() / USE_CASES_FILE
    return load_model(UseCases, path, "use-case file")


_DETAIL = re.compile(r"\s*\([^()]*\)")  # a quoted statement or detail inside a reason


def reason_causes(reason: str) -> list[str]:
    """The causes a decision's reason names, without their quoted detail, so one cause
    counts once: "not eligible for x: content rights in_copyright (© Jane Doe); no content
    type" -> ["content rights in_copyright", "no content type"]."""
    _, _, rest = reason.partition(": ")
    return [cause for p in _top_level_parts(rest or reason) if (cause := _without_detail(p))]


def _top_level_parts(text: str) -> list[str]:
    """``text`` split at "; " outside parentheses (a quoted statement may hold "; ")."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += (char == "(") - (char == ")")
        if depth == 0 and text.startswith("; ", i):
            parts.append(text[start:i])
            start = i + 2
    return [*parts, text[start:]]


def _without_detail(text: str) -> str:
    """``text`` with every parenthesised part removed, nested ones too ("(© X (DACS))"),
    and an unclosed one (a statement shortened for the reason) up to the end."""
    while (shorter := _DETAIL.sub("", text)) != text:
        text = shorter
    return text.partition("(")[0].strip()


class Decision(NamedTuple):
    """Whether a record or file is eligible for one use case, and why (sentences)."""

    eligible: bool
    reasons: list[str]

    @property
    def sentence(self) -> str:
        """The reasons as one sentence: "not eligible for vr: no rights statement; content
        type audio (takes image or 3d)"."""
        head, _, _ = self.reasons[0].partition(": ")
        if all(r.startswith(head + ": ") for r in self.reasons):
            return f"{head}: " + "; ".join(r.removeprefix(head + ": ") for r in self.reasons)
        return "; ".join(self.reasons)


# --- records ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RecordFacts:
    """What a record states that eligibility reads (``ContentMapping`` says where)."""

    content_rights: Rights
    metadata_licence: Rights
    content_type: ContentType | None
    object_kind: str | None = None  # the content type column's value as delivered

    @classmethod
    def of(cls, record: Mapping[str, Any], mapping: ContentMapping) -> RecordFacts:
        """A record's facts: ``record`` maps the contract's column names to values."""
        kind = _text(record.get(mapping.content_type_column or ""))
        licence = mapping.metadata_licence
        if mapping.metadata_licence_column:
            licence = _text(record.get(mapping.metadata_licence_column))
        return cls(
            content_rights=classify(_text(record.get(mapping.rights_column or ""))),
            metadata_licence=classify(licence),
            content_type=record_content_type(mapping, kind),
            object_kind=kind,
        )


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def record_content_type(mapping: ContentMapping, value: str | None) -> ContentType | None:
    """A record's content type: the contract's ``contentType``, else its column's value
    mapped by ``contentTypes`` (matched ignoring case and spacing) or, without a mapping,
    the value itself when it is a Flux content type. Anything else: None (no content type)."""
    if mapping.content_type is not None:
        return mapping.content_type
    if value is None or mapping.content_type_column is None:
        return None
    key = " ".join(value.split()).casefold()
    if mapping.content_types:
        types = {" ".join(k.split()).casefold(): v for k, v in mapping.content_types.items()}
        return types.get(key)
    return next((t for t in CONTENT_TYPES if t == key), None)


def record_eligibility(use_case: UseCase, facts: RecordFacts) -> Decision:
    """A record's decision for one use case (pixel sizes are its files', not checked here)."""
    problems = [
        *_rights_problem(use_case.content_rights, facts.content_rights, "content rights"),
        *_rights_problem(use_case.metadata_licence, facts.metadata_licence, "metadata licence"),
        *_type_problem(use_case, facts.content_type),
    ]
    if problems:
        return _not_eligible(use_case, problems)
    why = (
        f"eligible for {use_case.id}: content rights {facts.content_rights.label()}, "
        f"metadata licence {facts.metadata_licence.label()}"
    )
    if use_case.content_types is not None:
        why += f", content type {facts.content_type}"
    if use_case.min_side_pixels is not None:
        why += f" (its image files need {use_case.min_side_pixels} pixels on each side)"
    return Decision(True, [why])


def _rights_problem(accepted: tuple[RightsClass, ...], rights: Rights, what: str) -> list[str]:
    if rights.rights_class in accepted:
        return []
    if not rights.stated:
        return ["no rights statement" if what == "content rights" else f"no {what}"]
    if rights.rights_class == "unclassified":
        return [f"{what} not classified ({shorten(rights.original or '')}: {rights.reason})"]
    return [f"{what} {rights.label()}"]


def _type_problem(use_case: UseCase, content_type: ContentType | None) -> list[str]:
    if use_case.content_types is None or content_type in use_case.content_types:
        return []
    takes = " or ".join(use_case.content_types)
    if content_type is None:
        return [f"no content type (takes {takes})"]
    return [f"content type {content_type} (takes {takes})"]


def _not_eligible(use_case: UseCase, problems: list[str]) -> Decision:
    return Decision(False, [f"not eligible for {use_case.id}: {p}" for p in problems])


# --- files ------------------------------------------------------------------------------------
# Where a file's rights statements come from, most specific first: (facts key, name, in words).
RIGHTS_SOURCES: tuple[tuple[str, str, str], ...] = (
    ("sidecar_rights", "sidecar", "the file's sidecar"),
    ("record_rights", "record", "the record's rights statement"),
    ("repository_licence", "repository licence", "the repository licence"),
)
# MIME type families (as a byte-sniffing library reports them) -> Flux content types.
_MIME_FAMILIES: dict[str, ContentType] = {
    "image": "image",
    "audio": "audio",
    "video": "video",
    "text": "text",
    "model": "3d",
}
_MIME_TYPES: dict[str, ContentType] = {
    "application/pdf": "document",
    "application/xml": "text",
    "application/json": "text",
    "application/zip": "mixed",
}


def needs_content(use_case: UseCase) -> bool:
    """A use case that takes kinds of content (``content_types``: vr) uses the files
    themselves: a record is exported for it only with a file it may use."""
    return use_case.content_types is not None


def no_usable_file(use_case: UseCase) -> str:
    return f"not eligible for {use_case.id}: no content file it may use"


def detected_content_type(detected: str | None) -> ContentType | None:
    """A file's content type from its detected type: a Flux content type (``image``, ``3d``)
    or a MIME type (``image/tiff``, ``model/gltf-binary``, ``application/pdf``)."""
    if not detected:
        return None
    value = detected.strip().lower().split(";")[0]
    if value in CONTENT_TYPES:
        return next(t for t in CONTENT_TYPES if t == value)
    if value in _MIME_TYPES:
        return _MIME_TYPES[value]
    return _MIME_FAMILIES.get(value.partition("/")[0]) if "/" in value else None


def file_eligibility(use_case: UseCase, facts: Mapping[str, Any]) -> Decision:
    """A content file's decision for one use case.

    ``facts``: ``detected_type`` (a Flux content type or a MIME type, detected from the
    bytes), ``width`` and ``height`` (pixels, images), and the rights statements as text:
    ``sidecar_rights`` (the file's own sidecar), ``record_rights`` (the record referencing
    it), ``repository_licence`` (the delivery's or repository's licence). Other keys are
    ignored. The metadata licence is the record's, judged by ``record_eligibility``."""
    content_type = detected_content_type(facts.get("detected_type"))
    problems = [
        *_file_rights_problems(use_case, facts),
        *_type_problem(use_case, content_type),
        *_size_problem(use_case, content_type, facts.get("width"), facts.get("height")),
    ]
    if problems:
        return _not_eligible(use_case, problems)
    stated = _stated_sources(facts)
    rights = " and ".join(f"{name} {r.label()}" for name, _, r in stated)
    return Decision(True, [f"eligible for {use_case.id}: content rights from {rights}"])


def _stated_sources(facts: Mapping[str, Any]) -> list[tuple[str, str, Rights]]:
    """The sources that state something, most specific first: (name, in words, rights)."""
    found = [(name, words, classify(_text(facts.get(key)))) for key, name, words in RIGHTS_SOURCES]
    return [(name, words, rights) for name, words, rights in found if rights.stated]


def _file_rights_problems(use_case: UseCase, facts: Mapping[str, Any]) -> list[str]:
    stated = _stated_sources(facts)
    if not stated:
        return ["no rights statement"]
    (name, _, primary), others = stated[0], stated[1:]
    differing = [o for o in others if o[2].rights_class != primary.rights_class]
    accepted = use_case.content_rights
    if differing and not all(
        r.rights_class in accepted for r in (primary, *(o[2] for o in differing))
    ):
        return [
            f"content rights contradict {words} ({name}: {primary.label()}; {other}: "
            f"{rights.label()})"
            for other, words, rights in differing
        ]
    return _rights_problem(accepted, primary, "content rights")


def _size_problem(
    use_case: UseCase, content_type: ContentType | None, width: object, height: object
) -> list[str]:
    least = use_case.min_side_pixels
    if least is None or content_type != "image":
        return []
    width, height = _pixels(width), _pixels(height)
    if width is None or height is None:
        return [f"image size unknown (needs {least} pixels on each side)"]
    if min(width, height) < least:
        return [f"image {width}x{height} pixels, under {least} on its shorter side"]
    return []


def _pixels(value: object) -> int | None:
    """A pixel count given as a number or digits; anything else is no size."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None
