"""Flux's compiled view of a data contract.

Contracts are written in the Open Data Contract Standard (ODCS v3) and parsed with its
pydantic models (``open_data_contract_standard``); ``loader.py`` compiles them into these
smaller, strict models. Everything downstream (validator, DDL, pandera schema, JSON Schema,
contract page, demo generator) reads only these models, so there is one source of truth.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from flux_pipelines.errors import ConfigurationError

LogicalType = Literal["string", "integer", "number", "boolean", "date", "timestamp"]
Severity = Literal["fatal", "warning"]
RuleKind = Literal[
    "required",
    "type",
    "allowed_values",
    "minimum",
    "maximum",
    "pattern",
    "min_length",
    "max_length",
    "unique",
    "expression",
]
# ODCS ``classification`` values Flux reads; what each reader sees is contracts/access.yaml.
Classification = Literal["public", "internal", "restricted"]
# The Broker classes its rules by what they test; Flux keeps the same three classes.
Category = Literal["existence", "accuracy", "completeness"]


_frozen = ConfigDict(frozen=True, extra="forbid")

MiB = 1 << 20
# Size limits on what a delivery may hold (``SizeLimits``): the one place their defaults live.
DEFAULT_MAX_LINE_BYTES = 8 * MiB
DEFAULT_MAX_FIELD_BYTES = 1 * MiB
MAX_LINE_BYTES_ENV = "FLUX_MAX_LINE_BYTES"
MAX_FIELD_BYTES_ENV = "FLUX_MAX_FIELD_BYTES"


def _mib(size: int) -> str:
    return f"{size / MiB:g} MiB" if size % (MiB // 4) == 0 else f"{size:,} bytes"


# Delivery-level rules: a file that breaks one is quarantined whole (always fatal). The one
# catalogue of them: the loader, the readers, the landing-zone confinement (``confine.py``)
# and the sensors raise these ids, and the contract page and agency reports show these words.
# rule id -> (message, expected)
DELIVERY_RULES: dict[str, tuple[str, str]] = {
    "delivery.empty_file": ("the file has no data rows", "at least one data row"),
    "delivery.bad_encoding": (
        "the file is not UTF-8 text, nor in the encoding its contract declares",
        "UTF-8 text, or text in the encoding the contract declares (customProperty encoding)",
    ),
    "delivery.unreadable": ("the file cannot be parsed", "a well-formed file"),
    "delivery.duplicate_columns": ("a column header appears twice", "each column once"),
    "delivery.missing_required_columns": (
        "a required column is missing",
        "every required column present",
    ),
    "delivery.unsupported_format": (
        "the file type is not supported",
        "csv, json, jsonl or parquet",
    ),
    "delivery.line_too_long": (
        "a record (line) is longer than Flux reads",
        f"records of at most {_mib(DEFAULT_MAX_LINE_BYTES)} unless the operator set another "
        "limit (in a .json file, each element of the records array is a record)",
    ),
    "delivery.field_too_long": (
        "a field is longer than Flux reads",
        f"fields of at most {_mib(DEFAULT_MAX_FIELD_BYTES)} unless the operator set another limit",
    ),
    # The reading options a contract declares (ReadOptions): a file whose layout needs one
    # it does not declare, or is not the one it declares, is rejected rather than misread.
    "delivery.layout_mismatch": (
        "the file's layout is not the one its contract declares (comment lines before the "
        "header, JSON records under a key, a JSON object that is no record)",
        "no comment lines before the header unless customProperty commentPrefix declares "
        "them; JSON records in a top-level array, or where customProperty jsonRecordsPath "
        "says",
    ),
    "delivery.manifest_invalid": (
        "the manifest cannot be read",
        "a manifest in the documented format",
    ),
    "delivery.manifest_missing_file": (
        "a file the manifest lists was not delivered",
        "every file the manifest lists",
    ),
    "delivery.manifest_unlisted_file": (
        "a file is not listed in the manifest",
        "only files the manifest lists",
    ),
    "delivery.manifest_sha256_mismatch": (
        "the file's sha256 differs from the manifest",
        "the sha256 the manifest gives",
    ),
    "delivery.manifest_row_count_mismatch": (
        "the file's row count differs from the manifest",
        "the row count the manifest gives",
    ),
    # The landing zone: confinement (no link followed, nothing outside the agency's own
    # folder, regular files only) and completeness (ingest/confine.py, defs/ingest/landing.py).
    "delivery.symlink": (
        "the file, or a folder above it, is a symbolic link",
        "a regular file in a real folder of the agency's own landing folder",
    ),
    "delivery.outside_landing": (
        "the path leaves the agency's landing folder",
        "a file directly in landing/<agency>/<dataset>/<YYYY-MM-DD>/",
    ),
    "delivery.outside_outbox": (
        "the report folder leaves the agency's outbox folder",
        "a real folder in outbox/<agency>/",
    ),
    "delivery.not_a_file": (
        "the entry is not a regular file (a folder, FIFO, socket or device)",
        "a regular file directly in the day folder (sub-folders are not read)",
    ),
    "delivery.hard_link": (
        "the file is a hard link: it has other names on the file system",
        "a file of its own (a copy, not a hard link)",
    ),
    "delivery.not_a_folder": (
        "a file or special entry stands where a folder belongs",
        "a folder",
    ),
    "delivery.vanished": (
        "the file disappeared before Flux could read it",
        "files that stay in place until they are loaded",
    ),
    "delivery.changed_while_reading": (
        "the file changed while Flux read it (it was still being written)",
        "a complete file: a manifest or a _SUCCESS marker, or a rename once written",
    ),
    "delivery.changed_after_marker": (
        "the file changed after the delivery's _SUCCESS marker was written",
        "every file complete before _SUCCESS is written",
    ),
    "delivery.unknown_folder": (
        "a folder or file Flux never loads (unknown agency or dataset, bad day name)",
        "landing/<agency>/<dataset>/<YYYY-MM-DD>/ for an agency and dataset in the registry",
    ),
    "delivery.hidden_name": (
        "a hidden or temporary name, never loaded",
        "final names without a leading '.', '_' or '~' and no .tmp/.part suffix",
    ),
    "delivery.incomplete": (
        "the delivery has no completion signal yet",
        "a manifest or a _SUCCESS marker once every file is written",
    ),
}

# Content-package rules (``flux_pipelines/content``): a content file breaking one is
# quarantined, never stored (``content.audio_header`` only warns: the file is stored). The
# confinement rules above (``delivery.symlink``, ...) apply to content files too.
# rule id -> (message, expected)
CONTENT_RULES: dict[str, tuple[str, str]] = {
    "content.package_invalid": (
        "the content folder is no readable package, so none of its files can be verified",
        "content/ holding a BagIt bag (bagit.txt, manifest-<algorithm>.txt, data/) or a "
        "manifest.json listing every file with its path and sha256",
    ),
    "content.manifest_traversal": (
        "a manifest entry's path leaves the package ('..', absolute, NUL or backslash); "
        "Flux never follows it",
        "paths relative to the package root, inside it",
    ),
    "content.missing_file": (
        "a file the package manifest lists was not delivered",
        "every file the manifest lists",
    ),
    "content.unlisted_file": (
        "a file is not listed in the package manifest",
        "only files the manifest lists",
    ),
    "content.checksum_mismatch": (
        "the file's checksum differs from the package manifest",
        "the checksum the manifest gives",
    ),
    "content.empty_file": ("the file is empty (zero bytes)", "a file holding its content"),
    "content.type_mismatch": (
        "the file's bytes are not of the type declared for it",
        "bytes of the declared type (manifest media type, metadata content type, extension)",
    ),
    "content.image_unreadable": (
        "the image is truncated, cannot be read, or declares more pixels than is safe to decode",
        "a complete image in a format Pillow reads",
    ),
    "content.pdf_encrypted": ("the PDF is encrypted", "an unencrypted PDF"),
    "content.pdf_malformed": (
        "the PDF cannot be parsed (or has no page)",
        "a well-formed PDF with at least one page",
    ),
    "content.text_encoding": (
        "the text is not in its declared encoding (none declared: not UTF-8)",
        "UTF-8 text, or text in the charset its media type declares",
    ),
    "content.unreadable": (
        "the file's structure cannot be read (a WAV, glTF or JSON header or body)",
        "a well-formed file of its type",
    ),
    "content.audio_header": (
        "the WAV header's sizes were never finalised; facts were taken from the bytes",
        "a WAV whose RIFF and data chunk sizes match the file",
    ),
    "content.orphan_file": (
        "no record references the file",
        "a file named by a record's content file column or the manifest's record",
    ),
    "content.record_file_missing": (
        "a record's content file column names a file that is not in the content package",
        "every linked file in the day's content package",
    ),
}

# The one uniqueness rule of a key made of several ``primaryKey`` columns.
PRIMARY_KEY_RULE = "primary_key.unique"

# Row-level rules every contract has, whatever its columns (always fatal, never overridden).
SHORT_ROW_RULE = "row.short"
SHORT_ROW_MESSAGE = (
    "the record has fewer fields than the header: its last field(s) are missing, so its "
    "values may sit under the wrong columns; re-export it with every field (an empty value "
    "is an empty field: 1,a,)"
)
# rule id -> (message, expected)
FIXED_ROW_RULES: dict[str, tuple[str, str]] = {
    SHORT_ROW_RULE: (SHORT_ROW_MESSAGE, "one field per header column in every record"),
}


class SizeLimits(BaseModel):
    """How long a record and a field of a delivered file may be, in bytes as delivered.

    Flux rejects a file holding a longer one whole (``delivery.line_too_long``,
    ``delivery.field_too_long``) *before* parsing it: the readers measure records and
    fields in a streaming pass over the bytes, so a hostile file costs a bounded read, not
    memory the size of its largest value (a single 1 GB field took ~9.5 GB RSS before).

    The defaults are far beyond any legitimate federal delivery and far below what hurts:
    the longest field in the real agency files Flux is tested on is 7 KB (an NGA media
    description) and no contract column allows more than 2,048 characters, so 1 MiB per
    field is over 100 times what a value can legitimately need; 8 MiB per record leaves room
    for several such fields plus hundreds of ordinary ones. A value is held a few times over
    while it is parsed, typed and validated, so these keep one record's cost to tens of MB.

    A *record* is a CSV record (which may span lines inside quotes), a JSON Lines line, an
    element of a ``.json`` file's records array (the array is streamed, one element at a
    time, so a large array costs no more than its largest element; a ``.json`` document
    that is one object is one record, whole) or a Parquet row; a *field* is one value as
    delivered (CSV: between its separators, quotes included; JSON: its text).
    Set per deployment with ``FluxWarehouse`` (``max_line_bytes``, ``max_field_bytes``) or
    the environment (``FLUX_MAX_LINE_BYTES``, ``FLUX_MAX_FIELD_BYTES``: bytes, or with a
    KiB/MiB/GiB suffix).
    """

    model_config = _frozen
    max_line_bytes: int = Field(default=DEFAULT_MAX_LINE_BYTES, gt=0)
    max_field_bytes: int = Field(default=DEFAULT_MAX_FIELD_BYTES, gt=0)

    @classmethod
    def resolve(
        cls,
        *,
        max_line_bytes: int | None = None,
        max_field_bytes: int | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> SizeLimits:
        """The limits in force: a setting given here, else the environment, else the default.

        A malformed or non-positive value is a ``ConfigurationError`` naming the setting,
        never a silent fallback to the default."""
        env = os.environ if environ is None else environ
        line = max_line_bytes if max_line_bytes is not None else _env_size(env, MAX_LINE_BYTES_ENV)
        field = (
            max_field_bytes if max_field_bytes is not None else _env_size(env, MAX_FIELD_BYTES_ENV)
        )
        values = {"max_line_bytes": line, "max_field_bytes": field}
        for name, value in values.items():
            if value is not None and value <= 0:
                raise ConfigurationError(f"{name} must be a positive number of bytes, not {value}")
        return cls(**{k: v for k, v in values.items() if v is not None})

    def describe(self) -> str:
        """The limits in words, for logs and reasons."""
        line, field = _mib(self.max_line_bytes), _mib(self.max_field_bytes)
        return f"records up to {line}, fields up to {field}"


_SIZE_TEXT = re.compile(r"^\s*([0-9]+)\s*(|B|K|KB|KIB|M|MB|MIB|G|GB|GIB)\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str, *, setting: str) -> int:
    """Bytes from '8388608', '8MiB', '8M' or '8 MB' (binary units: 1 MB = 1 MiB here)."""
    match = _SIZE_TEXT.match(text)
    if match is None:
        raise ConfigurationError(
            f"{setting}={text!r} is not a size: give bytes (8388608) or a KiB/MiB/GiB size (8MiB)"
        )
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)[:1].upper()]


def _env_size(env: Mapping[str, str], name: str) -> int | None:
    text = env.get(name, "").strip()
    return parse_size(text, setting=name) if text else None


class ReadOptions(BaseModel):
    """How a dataset's files are read, when they differ from the defaults (contract-level
    customProperties ``commentPrefix``, ``jsonRecordsPath``, ``jsonDocument``, ``encoding``)."""

    model_config = _frozen
    # CSV: lines starting with this before the header are comments (science archives' exports)
    comment_prefix: str | None = None
    # .json: the keys leading from the document's top object to the array of records
    json_records_path: tuple[str, ...] = ()
    # .json: each document is one record (an object that may hold arrays of objects as
    # fields, e.g. a museum's one-file-per-artwork export), never a wrapper of records
    json_document_record: bool = False
    # text files (CSV, JSON, JSON Lines) when not UTF-8, e.g. latin-1 or cp1252
    encoding: str = "utf-8"


class NumberFormat(BaseModel):
    """How a number column's values are written, when not as plain numerals (column
    customProperty ``numberFormat``): `` $149,800 ``, ``(1,200.00)``, ``12%``."""

    model_config = _frozen
    currency: tuple[str, ...] = ()  # symbols or codes allowed before or after the number
    thousands: str | None = None  # the group separator, only between groups of 3 digits
    decimal: str = "."
    negative_parentheses: bool = False  # (1,200.00) is -1200
    percent: Literal["fraction", "points"] | None = None  # 12% is 0.12, or 12

    def describe(self) -> str:
        """The format in words, for messages and contract pages."""
        parts = []
        if self.currency:
            parts.append(f"currency {' or '.join(self.currency)}")
        if self.thousands:
            parts.append(f"thousands separated by {self.thousands!r}")
        if self.decimal != ".":
            parts.append(f"decimal {self.decimal!r}")
        if self.negative_parentheses:
            parts.append("negatives in parentheses")
        if self.percent:
            parts.append(f"a % sign ({'12% = 0.12' if self.percent == 'fraction' else '12% = 12'})")
        return ", ".join(parts) or "plain numerals"


class AllowedValue(BaseModel):
    model_config = _frozen
    value: str
    description: str | None = None


class ColumnSpec(BaseModel):
    """One column of a dataset, as the contract states it."""

    model_config = _frozen
    name: str
    logical_type: LogicalType
    description: str = ""
    required: bool = False
    unique: bool = False
    primary_key: bool = False
    source_names: tuple[str, ...] = ()
    allowed_values: tuple[AllowedValue, ...] = ()
    case_insensitive_values: bool = False
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    pattern: str | None = None
    min_length: int | None = None
    max_length: int | None = None
    date_format: str | None = None
    number_format: NumberFormat | None = None
    unit: str | None = None
    examples: tuple[str, ...] = ()
    # The column's name in the previous contract version (a rename): older days' rows are
    # stored under the new name, and deliveries still sending the old header map to it.
    renamed_from: str | None = None
    # ODCS ``classification`` and customProperty ``personalData``: what a reader who is not
    # entitled to them sees of the column in published copies (``access/masking.py``).
    classification: Classification = "public"
    personal_data: bool = False


class Rule(BaseModel):
    """A rule with a stable id, as reported in quarantine rows and agency reports."""

    model_config = _frozen
    id: str
    kind: RuleKind
    column: str | None = None
    columns: tuple[str, ...] = ()
    severity: Severity = "fatal"
    category: Category = "accuracy"
    message: str
    expected: str
    expression: str | None = None
    # unique rules: a key compares ``columns`` together (one column, a composite primary
    # key, or every column: exact duplicate rows). A key with an empty part is no key,
    # unless nulls match (exact duplicate rows: two rows empty in the same places repeat).
    nulls_match: bool = False

    @property
    def key_name(self) -> str:
        """A unique rule's key as the loader names it (the column, or columns joined by +)."""
        return "+".join(self.columns)


CrossKind = Literal["reference", "sum", "sql"]
CROSS_OUTPUT_COLUMNS = ("_file", "_row_number", "field", "value_provided", "expected", "difference")


class CrossRule(BaseModel):
    """A rule over this dataset's partition and other datasets of the same agency file.

    Compiled to one SQL query returning the violating rows of this partition
    (``CROSS_OUTPUT_COLUMNS``); ``{{this}}`` stands for the partition's curated rows and
    ``{{<dataset>}}`` for another dataset's curated table (every day of it).
    """

    model_config = _frozen
    id: str
    kind: CrossKind
    datasets: tuple[str, ...]  # the other datasets it reads
    columns: tuple[str, ...] = ()  # this dataset's columns it judges
    target_columns: tuple[str, ...] = ()  # reference rules: the key columns referenced
    severity: Severity = "fatal"
    category: Category = "existence"
    message: str
    expected: str
    query: str


class CatalogueEntry(BaseModel):
    """One line of a contract's rule catalogue, whatever the rule's kind."""

    model_config = _frozen
    id: str
    scope: Literal["row", "cross-dataset", "delivery"]
    severity: Severity
    category: Category
    message: str
    expected: str
    default_severity: Severity


# Flux's content types: what a record's content, or a delivered content file, is (issue 16).
ContentType = Literal["image", "document", "text", "audio", "video", "3d", "mixed"]


class ContentMapping(BaseModel):
    """Where a contract states a record's rights and content: contract-level customProperties
    ``rightsColumn``, ``metadataLicence`` or ``metadataLicenceColumn``, ``contentType`` or
    ``contentTypeColumn`` (with ``contentTypes``), ``contentFileColumns`` (contracts/README.md).

    Every column named is one of the contract's (checked when the contract loads);
    ``flux_pipelines/collections`` reads this to decide which record is eligible for which
    use case. A contract declaring none of them has no mapping (``Contract.content`` None)."""

    model_config = _frozen
    rights_column: str | None = None  # each record's content rights statement
    metadata_licence: str | None = None  # the licence of every record's metadata, as stated
    metadata_licence_column: str | None = None  # ... or a column stating it per record
    content_type: ContentType | None = None  # every record's content type
    content_type_column: str | None = None  # ... or a column holding it or the object kind
    content_types: dict[str, ContentType] = Field(default_factory=dict)  # its value -> type
    content_file_columns: tuple[str, ...] = ()  # file names, paths or URLs of the content

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column the mapping names."""
        named = (self.rights_column, self.metadata_licence_column, self.content_type_column)
        return tuple(c for c in named if c) + self.content_file_columns

    def renamed(self, names: Mapping[str, str]) -> ContentMapping:
        """The mapping once a later version renamed columns (old -> new)."""

        def new(name: str | None) -> str | None:
            return names.get(name, name) if name is not None else None

        return self.model_copy(
            update={
                "rights_column": new(self.rights_column),
                "metadata_licence_column": new(self.metadata_licence_column),
                "content_type_column": new(self.content_type_column),
                "content_file_columns": tuple(names.get(c, c) for c in self.content_file_columns),
            }
        )


class Contract(BaseModel):
    """A dataset version: columns, rules and delivery conventions."""

    model_config = _frozen
    id: str
    dataset: str
    version: str
    domain: str
    title: str
    description: str = ""
    status: str = "active"
    effective_from: dt.date = dt.date(2000, 1, 1)
    null_values: tuple[str, ...] = ("", "NA")
    reading: ReadOptions = ReadOptions()
    columns: tuple[ColumnSpec, ...]
    rules: tuple[Rule, ...]
    cross_rules: tuple[CrossRule, ...] = ()
    # Per-agency severity overrides applied to this copy (rule id -> contract's severity).
    overridden: dict[str, Severity] = Field(default_factory=dict)
    source_path: str = ""
    extra: dict[str, str] = Field(default_factory=dict)
    # Rights and content columns (customProperties rightsColumn, ...); None: none declared.
    content: ContentMapping | None = None

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def identifier(self) -> list[str]:
        """Columns that identify a row (the Broker's 'Unique ID'); row number if none."""
        return [c.name for c in self.columns if c.primary_key]

    @property
    def required_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    def column(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def renamed(self, names: dict[str, str]) -> Contract:
        """This version with columns renamed (old -> new): how its rows are stored once a
        later version renamed them. Rules follow their columns."""
        if not names:
            return self

        def new(name: str | None) -> str | None:
            return names.get(name, name) if name is not None else None

        return self.model_copy(
            update={
                "columns": tuple(
                    c.model_copy(update={"name": names[c.name], "renamed_from": c.name})
                    if c.name in names
                    else c
                    for c in self.columns
                ),
                "rules": tuple(
                    r.model_copy(
                        update={
                            "column": new(r.column),
                            "columns": tuple(names.get(c, c) for c in r.columns),
                        }
                    )
                    for r in self.rules
                ),
                "content": self.content.renamed(names) if self.content else None,
            }
        )

    def retyped(self, types: Mapping[str, LogicalType]) -> Contract:
        """This version with the given columns' logical types (how a later version stores
        them); columns not named keep theirs.

        Rules that judge a retyped column's values under its old type (ranges, patterns,
        lengths, allowed values, expressions over it) are left out: the day's rows were
        validated under this version as delivered, and what the stored copy can still be
        held to is its stored type, presence and uniqueness."""
        changed = {
            c.name for c in self.columns if types.get(c.name, c.logical_type) != c.logical_type
        }
        if not changed:
            return self
        return self.model_copy(
            update={
                "columns": tuple(
                    c.model_copy(update={"logical_type": types[c.name]}) if c.name in changed else c
                    for c in self.columns
                ),
                "rules": tuple(r for r in self.rules if not _judges_values_of(r, changed)),
            }
        )

    @property
    def rule_ids(self) -> set[str]:
        return {r.id for r in self.rules} | {r.id for r in self.cross_rules}

    def catalogue(self) -> list[CatalogueEntry]:
        """Every rule with a stable id, as the contract page and the UI list them."""
        entries = [
            CatalogueEntry(
                id=r.id,
                scope="row",
                severity=r.severity,
                category=r.category,
                message=r.message,
                expected=r.expected,
                default_severity=self.overridden.get(r.id, r.severity),
            )
            for r in self.rules
        ]
        entries += [
            CatalogueEntry(
                id=rule_id,
                scope="row",
                severity="fatal",
                category="existence",
                message=message,
                expected=expected,
                default_severity="fatal",
            )
            for rule_id, (message, expected) in FIXED_ROW_RULES.items()
        ]
        entries += [
            CatalogueEntry(
                id=r.id,
                scope="cross-dataset",
                severity=r.severity,
                category=r.category,
                message=r.message,
                expected=r.expected,
                default_severity=self.overridden.get(r.id, r.severity),
            )
            for r in self.cross_rules
        ]
        entries += [
            CatalogueEntry(
                id=rule_id,
                scope="delivery",
                severity="fatal",
                category="existence",
                message=message,
                expected=expected,
                default_severity="fatal",
            )
            for rule_id, (message, expected) in DELIVERY_RULES.items()
        ]
        return entries

    def with_severities(self, overrides: dict[str, Severity]) -> Contract:
        """This contract as one agency sees it (the Broker lets agencies set significance)."""
        unknown = sorted(set(overrides) - self.rule_ids)
        if unknown:
            raise KeyError(", ".join(unknown))
        if not overrides:
            return self
        return self.model_copy(
            update={
                "rules": tuple(
                    r.model_copy(update={"severity": overrides[r.id]}) if r.id in overrides else r
                    for r in self.rules
                ),
                "cross_rules": tuple(
                    r.model_copy(update={"severity": overrides[r.id]}) if r.id in overrides else r
                    for r in self.cross_rules
                ),
                "overridden": {
                    rid: self.rule_severity(rid)
                    for rid in overrides
                    if overrides[rid] != self.rule_severity(rid)
                },
            }
        )

    def rule_severity(self, rule_id: str) -> Severity:
        every: list[Rule | CrossRule] = [*self.rules, *self.cross_rules]
        for r in every:
            if r.id == rule_id:
                return r.severity
        raise KeyError(rule_id)

    def rule(self, rule_id: str) -> Rule:
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise KeyError(rule_id)

    @property
    def version_tag(self) -> str:
        return f"{self.dataset}@{self.version}"


def _judges_values_of(rule: Rule, columns: set[str]) -> bool:
    if rule.kind == "expression":
        return bool(columns & {rule.column, *rule.columns})
    return rule.column in columns and rule.kind not in ("required", "unique")
