"""Parse an ODCS v3 contract file and compile it into Flux's ``Contract``.

Contracts are written in the ODCS v3.0.2 spelling (``apiVersion: v3.0.2``; the test suite
lints every shipped contract with ``datacontract lint``). ODCS fields used (see
contracts/README.md for the full convention):
- top level: ``id``, ``name`` (the dataset id), ``version``, ``status``, ``domain``,
  ``description.purpose``; customProperties ``effectiveFrom`` and ``nullValues``; where a
  record states its rights and content: ``rightsColumn``, ``metadataLicence`` or
  ``metadataLicenceColumn``, ``contentType`` or ``contentTypeColumn`` (+ ``contentTypes``),
  ``contentFileColumns`` (``ContentMapping``).
- one ``schema`` object whose ``properties`` are the columns: ``logicalType`` (a date and
  time is ``logicalType: date`` with ``physicalType: timestamp``), ``required``, ``unique``,
  ``primaryKey``, ``enum``, ``examples``, ``logicalTypeOptions`` (minimum, maximum,
  exclusiveMinimum / exclusiveMaximum as flags on them, pattern, minLength, maxLength,
  format), ``classification`` (public | internal | restricted); customProperties
  ``sourceNames``, ``severity`` (rule kind -> fatal|warning), ``unit``, ``caseInsensitive``,
  ``personalData`` (true | false).
- ``quality`` on the schema or a property: ``type: custom, engine: flux`` with a SQL boolean
  ``implementation`` that a valid row satisfies (or, on the schema, ``implementation: {rule:
  sumReconciliation, arguments: ...}``); ``type: library`` with ``rule: nullValues``
  (completeness) or ``duplicateValues`` (uniqueness); ``dimension`` is one of ODCS's, and a
  customProperty ``category`` gives Flux's category (existence, accuracy, completeness).

A spelling ODCS v3.0.2 lacks is a ``ContractError`` naming the file, the field and the
spelling to write instead (``logicalType: timestamp``, a library ``metric`` without ``rule``,
``dimension: existence``, an enum entry cut at a comma by YAML flow syntax).
"""

from __future__ import annotations

import codecs
import datetime as dt
from pathlib import Path
from typing import Any, cast, get_args

import polars as pl
import yaml
from open_data_contract_standard.model import (
    CustomProperty,
    DataQuality,
    EnumValue,
    OpenDataContractStandard,
    SchemaProperty,
)
from pydantic import ValidationError

from flux_pipelines.contracts.cross_rules import compile_quality, compile_relationship
from flux_pipelines.contracts.logical_types import from_odcs, odcs_spellings
from flux_pipelines.contracts.model import (
    PRIMARY_KEY_RULE,
    AllowedValue,
    Category,
    Classification,
    ColumnSpec,
    ContentMapping,
    ContentType,
    Contract,
    LogicalType,
    NumberFormat,
    ReadOptions,
    Rule,
    RuleKind,
    Severity,
)
from flux_pipelines.contracts.rule_kinds import REGISTRY
from flux_pipelines.errors import ConfigurationError, ContractError
from flux_pipelines.slugs import check_column, check_slug

# ODCS v3.0.2 quality dimensions; Flux's own category is a customProperty ``category``.
ODCS_DIMENSIONS = frozenset(
    {"accuracy", "completeness", "conformity", "consistency", "coverage", "timeliness",
     "uniqueness"}
)  # fmt: skip
_CATEGORIES: frozenset[str] = frozenset({"existence", "accuracy", "completeness"})
_ENUM_KEYS = frozenset(EnumValue.model_fields)
SUM_RECONCILIATION = "sumReconciliation"
_SEVERITIES: dict[str, Severity] = {
    "fatal": "fatal",
    "error": "fatal",
    "critical": "fatal",
    "warning": "warning",
    "warn": "warning",
    "info": "warning",
}
MAX_EXPECTED_CHARS = 300

# libyaml's parser when built in: ~10x faster than the pure-Python one, same safe constructor.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_contract(path: Path) -> Contract:
    """Read, validate and compile one contract file; any problem is a ContractError."""
    try:
        text = path.read_text(encoding="utf-8")
        raw = yaml.load(text, Loader=SAFE_LOADER)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ContractError(str(path), f"cannot be read as YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ContractError(str(path), "is not a YAML mapping")
    try:
        odcs = OpenDataContractStandard.model_validate(raw)
    except ValidationError as exc:
        raise ContractError(str(path), f"is not valid ODCS v3: {exc}") from exc
    try:
        check_enum_entries(raw)
        return compile_contract(odcs, str(path))
    except ConfigurationError as exc:
        if isinstance(exc, ContractError):
            raise
        raise ContractError(str(path), str(exc)) from exc
    except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
        raise ContractError(str(path), f"has an invalid value: {exc}") from exc


def compile_contract(odcs: OpenDataContractStandard, source: str) -> Contract:
    """Turn a validated ODCS document into Flux's compiled contract."""
    if odcs.kind != "DataContract":
        raise ConfigurationError(f"kind must be DataContract, got {odcs.kind!r}")
    dataset = check_slug(odcs.name, "dataset id (name)")
    if not odcs.schema_ or len(odcs.schema_) != 1:
        raise ConfigurationError("must declare exactly one schema object (the dataset table)")
    table = odcs.schema_[0]
    if not table.properties:
        raise ConfigurationError(f"schema {table.name!r} has no properties (columns)")
    top = _custom(odcs.customProperties)
    columns = tuple(_column(p) for p in table.properties)
    names = [c.name for c in columns]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ConfigurationError(f"duplicate column names: {dupes}")
    rules: list[Rule] = []
    key = [c.name for c in columns if c.primary_key]
    for prop, col in zip(table.properties, columns, strict=True):
        rules.extend(_column_rules(col, _custom(prop.customProperties), composite=len(key) > 1))
        rules.extend(_quality_rules(prop.quality or [], names, default_column=col.name))
    if len(key) > 1:
        rules.append(_primary_key_rule(key))
    cross = [compile_relationship(r, dataset, names) for r in table.relationships or []]
    row_level: list[DataQuality] = []
    for entry in table.quality or []:
        q = _sum_rule_spelling(entry)
        compiled = compile_quality(q, dataset, names)
        if compiled is None:
            row_level.append(q)
        else:
            category = _quality_category(q)
            cross.append(
                compiled if category is None else compiled.model_copy(update={"category": category})
            )
    rules.extend(_quality_rules(row_level, names, default_column=None))
    ids = [r.id for r in rules] + [r.id for r in cross]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise ConfigurationError(f"duplicate rule ids: {dupes}")
    description = odcs.description.purpose if odcs.description else None
    return Contract(
        id=check_slug(odcs.id, "contract id"),
        dataset=dataset,
        version=odcs.version,
        domain=check_slug(odcs.domain or "", "domain"),
        title=table.businessName or dataset.replace("_", " "),
        description=(description or table.description or "").strip(),
        status=odcs.status,
        effective_from=_date(top.get("effectiveFrom", "2000-01-01")),
        null_values=tuple(str(v) for v in top.get("nullValues", ["", "NA"])),
        reading=_read_options(top),
        columns=columns,
        rules=tuple(rules),
        cross_rules=tuple(cross),
        source_path=source,
        extra={k: str(v) for k, v in top.items() if k not in _CONTRACT_PROPERTIES},
        content=_content_mapping(top, columns),
    )


# Contract-level customProperties mapping rights and content to columns (ContentMapping).
_CONTENT_PROPERTIES = {
    "rightsColumn",
    "metadataLicence",
    "metadataLicenceColumn",
    "contentType",
    "contentTypeColumn",
    "contentTypes",
    "contentFileColumns",
}
_CONTRACT_PROPERTIES = {
    "effectiveFrom",
    "nullValues",
    "commentPrefix",
    "jsonRecordsPath",
    "jsonDocument",
    "encoding",
    *_CONTENT_PROPERTIES,
}
_CONTENT_TYPES: tuple[ContentType, ...] = get_args(ContentType)


def _content_mapping(top: dict[str, Any], columns: tuple[ColumnSpec, ...]) -> ContentMapping | None:
    """The rights and content customProperties, checked: each names a text column of the
    contract, and a value and a column stating the same thing are not both given."""
    for spelling in ("metadataLicense", "metadataLicenseColumn"):
        if spelling in top:
            raise ConfigurationError(
                f"customProperty {spelling}: write {spelling.replace('License', 'Licence')}"
            )
    if not _CONTENT_PROPERTIES & set(top):
        return None
    names = {c.name: c for c in columns}

    def column(prop: str, value: object) -> str:
        spec = names.get(value) if isinstance(value, str) else None
        if spec is None:
            raise ConfigurationError(
                f"customProperty {prop} names {value!r}, which is not a column of the contract "
                f"(columns: {', '.join(names)})"
            )
        if spec.logical_type != "string":
            raise ConfigurationError(
                f"customProperty {prop}: column {value} is {spec.logical_type}; rights, licences, "
                "content types and file links are text (logicalType string)"
            )
        return spec.name

    def one_of(value_prop: str, column_prop: str) -> None:
        if value_prop in top and column_prop in top:
            raise ConfigurationError(
                f"customProperties {value_prop} and {column_prop} both given: declare the value "
                f"for every record ({value_prop}) or the column stating it ({column_prop})"
            )

    one_of("metadataLicence", "metadataLicenceColumn")
    one_of("contentType", "contentTypeColumn")
    licence = top.get("metadataLicence")
    if licence is not None and (not isinstance(licence, str) or not licence.strip()):
        raise ConfigurationError(
            "customProperty metadataLicence must be the metadata's licence as text or a URI "
            f"(e.g. https://creativecommons.org/publicdomain/zero/1.0/), got {licence!r}"
        )
    mapping = top.get("contentTypes", {})
    if mapping and "contentTypeColumn" not in top:
        raise ConfigurationError("customProperty contentTypes needs contentTypeColumn")
    if not isinstance(mapping, dict) or any(
        not isinstance(k, str) or v not in _CONTENT_TYPES for k, v in mapping.items()
    ):
        raise ConfigurationError(
            "customProperty contentTypes must map the content type column's values to "
            f"{', '.join(_CONTENT_TYPES)}; got {mapping!r}"
        )
    kind = top.get("contentType")
    if kind is not None and kind not in _CONTENT_TYPES:
        raise ConfigurationError(
            f"customProperty contentType {kind!r} is not one of {', '.join(_CONTENT_TYPES)}"
        )
    files = top.get("contentFileColumns", [])
    files = [files] if isinstance(files, str) else files
    if not isinstance(files, list):
        raise ConfigurationError(
            f"customProperty contentFileColumns must list columns, got {files!r}"
        )
    optional = {p: column(p, top[p]) for p in _COLUMN_PROPERTIES if p in top}
    return ContentMapping(
        rights_column=optional.get("rightsColumn"),
        metadata_licence=licence.strip() if licence else None,
        metadata_licence_column=optional.get("metadataLicenceColumn"),
        content_type=kind,
        content_type_column=optional.get("contentTypeColumn"),
        content_types=mapping,
        content_file_columns=tuple(column("contentFileColumns", f) for f in files),
    )


_COLUMN_PROPERTIES = ("rightsColumn", "metadataLicenceColumn", "contentTypeColumn")
_TEXT_LIMIT = 8  # characters of a comment prefix, currency symbol or separator


def _read_options(top: dict[str, Any]) -> ReadOptions:
    """The contract-level reading options, each checked so a typo fails at load."""
    prefix = top.get("commentPrefix")
    if prefix is not None and (
        not isinstance(prefix, str) or not 0 < len(prefix) <= _TEXT_LIMIT or "\n" in prefix
    ):
        raise ConfigurationError(
            f"customProperty commentPrefix must be 1-{_TEXT_LIMIT} characters on one line "
            f"(e.g. '#'), got {prefix!r}"
        )
    path = top.get("jsonRecordsPath", "")
    if not isinstance(path, str) or (any(not part for part in path.split(".")) and path):
        raise ConfigurationError(
            "customProperty jsonRecordsPath must be keys joined by '.' leading to the records "
            f"array (e.g. 'releases' or 'data.items'), got {path!r}"
        )
    document = top.get("jsonDocument", "records")
    if document not in ("records", "record") or (document == "record" and path):
        raise ConfigurationError(
            "customProperty jsonDocument must be 'record' (each .json document is one record) "
            f"or 'records' (the default: an array of records), got {document!r}"
            + (" together with jsonRecordsPath, which says the opposite" if path else "")
        )
    encoding = str(top.get("encoding", "utf-8"))
    try:
        name = codecs.lookup(encoding).name
    except LookupError as exc:
        raise ConfigurationError(
            f"customProperty encoding {encoding!r} is not a known text encoding "
            "(e.g. utf-8, latin-1, cp1252)"
        ) from exc
    return ReadOptions(
        comment_prefix=prefix,
        json_records_path=tuple(path.split(".")) if path else (),
        json_document_record=document == "record",
        encoding=name,
    )


def _number_format(value: Any, column: str, logical: LogicalType) -> NumberFormat | None:
    """A column's ``numberFormat`` customProperty, checked: only on number and integer
    columns, separators that cannot be confused, symbols without digits."""
    if value is None:
        return None
    where = f"column {column}: numberFormat"
    if logical not in ("number", "integer"):
        raise ConfigurationError(f"{where} applies to number and integer columns, not {logical}")
    if not isinstance(value, dict):
        raise ConfigurationError(f"{where} must be a mapping (currency, thousands, ...)")
    known = {"currency", "thousands", "decimal", "negativeParentheses", "percent"}
    if set(value) - known:
        raise ConfigurationError(
            f"{where} has unknown keys {sorted(set(value) - known)}; use {sorted(known)}"
        )
    currency = value.get("currency", [])
    currency = [currency] if isinstance(currency, str) else currency
    texts = [*currency, value.get("thousands") or "x", value.get("decimal", ".")]
    if not all(isinstance(t, str) and 0 < len(t) <= _TEXT_LIMIT for t in texts) or any(
        ch.isdigit() or ch in "+-()%" for t in texts for ch in t
    ):
        raise ConfigurationError(
            f"{where}: currency symbols and separators are 1-{_TEXT_LIMIT} characters with no "
            f"digits, signs, parentheses or %; got {value!r}"
        )
    try:
        fmt = NumberFormat(
            currency=tuple(currency),
            thousands=value.get("thousands"),
            decimal=value.get("decimal", "."),
            negative_parentheses=bool(value.get("negativeParentheses", False)),
            percent=value.get("percent"),
        )
    except ValidationError as exc:
        raise ConfigurationError(
            f"{where}: {exc.errors()[0]['msg']} (percent: fraction or points)"
        ) from exc
    if fmt.thousands == fmt.decimal:
        raise ConfigurationError(f"{where}: thousands and decimal separators must differ")
    if logical == "integer" and fmt.percent == "fraction":
        raise ConfigurationError(
            f"{where}: percent: fraction makes fractions; the column is an integer"
        )
    return fmt


def _custom(props: list[CustomProperty] | None) -> dict[str, Any]:
    return {p.property: p.value for p in (props or []) if p.property}


def check_enum_entries(raw: dict[str, Any]) -> None:
    """Refuse an enum entry with keys ODCS does not define: it is a description cut short.

    YAML flow syntax ends a plain value at ``, ``: ``{value: SBA, description: Small business
    set-aside, total}`` is the description "Small business set-aside" plus a key ``total``,
    which the ODCS models drop without a word. Quoting the description keeps its full text.
    """
    for table in raw.get("schema") or []:
        properties = table.get("properties") if isinstance(table, dict) else None
        for prop in properties if isinstance(properties, list) else []:
            entries = prop.get("enum") if isinstance(prop, dict) else None
            for index, entry in enumerate(entries if isinstance(entries, list) else []):
                if not isinstance(entry, dict):
                    continue
                stray = [str(key) for key in entry if key not in _ENUM_KEYS]
                if not stray:
                    continue
                where = f"column {prop.get('name')}: enum[{index}] (value {entry.get('value')!r})"
                if "description" in entry and all(entry[key] is None for key in stray):
                    text = ", ".join([str(entry["description"]), *stray])
                    hint = f'quote the description: description: "{text}"'
                else:
                    hint = f"an enum entry has only {sorted(_ENUM_KEYS)}"
                raise ConfigurationError(
                    f"{where} has keys ODCS does not define {stray}: in a {{value: ..., "
                    f"description: ...}} flow mapping a description is cut at its first ', '; "
                    f"{hint}"
                )


def _date(value: object) -> dt.date:
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError as exc:
        raise ConfigurationError(f"effectiveFrom {value!r} is not a YYYY-MM-DD date") from exc


def _logical_type(prop: SchemaProperty, name: str) -> LogicalType:
    """The column's Flux type: ODCS v3.0.2 has no timestamp logicalType, so a date and time
    is ``logicalType: date`` with ``physicalType: timestamp``."""
    spelled = (prop.logicalType or "").lower()
    if spelled == "timestamp":
        raise ConfigurationError(
            f"column {name}: logicalType 'timestamp' is not an ODCS v3.0.2 logical type; "
            "write logicalType: date with physicalType: timestamp"
        )
    logical = from_odcs(spelled, prop.physicalType)
    if logical is None:
        raise ConfigurationError(
            f"column {name}: logicalType {prop.logicalType!r} is not one of "
            f"{odcs_spellings()} (a date and time: logicalType date with physicalType "
            "timestamp)"
        )
    return logical


def _column(prop: SchemaProperty) -> ColumnSpec:
    name = check_column(prop.name, "column")
    logical = _logical_type(prop, name)
    opts = prop.logicalTypeOptions or {}
    custom = _custom(prop.customProperties)
    known = {
        "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "pattern",
        "minLength", "maxLength", "format",
    }  # fmt: skip
    unknown = set(opts) - known
    if unknown:
        raise ConfigurationError(f"column {name}: unsupported logicalTypeOptions {sorted(unknown)}")
    minimum, exclusive_min = _bound(opts, "minimum", "exclusiveMinimum", name)
    maximum, exclusive_max = _bound(opts, "maximum", "exclusiveMaximum", name)
    pattern = opts.get("pattern")
    if pattern is not None:
        try:
            pl.select(pl.lit("x").str.contains(str(pattern)))
        except pl.exceptions.PolarsError as exc:
            raise ConfigurationError(f"column {name}: pattern {pattern!r} is invalid") from exc
    sources = custom.get("sourceNames", [])
    if isinstance(sources, str):
        sources = [sources]
    return ColumnSpec(
        name=name,
        logical_type=logical,
        description=(prop.description or "").strip(),
        required=bool(prop.required),
        unique=bool(prop.unique),
        primary_key=bool(prop.primaryKey),
        source_names=tuple(str(s) for s in sources),
        allowed_values=tuple(
            AllowedValue(value=str(e.value), description=e.description) for e in prop.enum or []
        ),
        case_insensitive_values=bool(custom.get("caseInsensitive", False)),
        minimum=minimum,
        maximum=maximum,
        exclusive_minimum=exclusive_min,
        exclusive_maximum=exclusive_max,
        pattern=str(pattern) if pattern is not None else None,
        min_length=opts.get("minLength"),
        max_length=opts.get("maxLength"),
        date_format=opts.get("format"),
        number_format=_number_format(custom.get("numberFormat"), name, logical),
        unit=custom.get("unit"),
        examples=tuple(str(e) for e in prop.examples or []),
        renamed_from=(
            check_column(str(custom["renamedFrom"]), "renamedFrom")
            if custom.get("renamedFrom")
            else None
        ),
        classification=_classification(prop.classification, name),
        personal_data=_personal_data(custom.get("personalData", False), name),
    )


_CLASSIFICATIONS: dict[str, Classification] = {
    "public": "public",
    "internal": "internal",
    "restricted": "restricted",
}


def _classification(value: str | None, column: str) -> Classification:
    """ODCS ``classification``, one of Flux's three levels (default public). Any other word
    (``confidential``, a typo) is refused: masking must never guess what a level means."""
    if value is None or not str(value).strip():
        return "public"
    level = _CLASSIFICATIONS.get(str(value).strip().lower())
    if level is None:
        raise ConfigurationError(
            f"column {column}: classification {value!r} is not one of "
            f"{', '.join(_CLASSIFICATIONS)} (contracts/access.yaml says what each reader sees "
            "of each)"
        )
    return level


def _personal_data(value: object, column: str) -> bool:
    """customProperty ``personalData``: a YAML boolean, so a quoted 'false' cannot pass as
    personal data published in clear (or the reverse)."""
    if not isinstance(value, bool):
        raise ConfigurationError(
            f"column {column}: customProperty personalData must be true or false (unquoted), "
            f"got {value!r}"
        )
    return value


def _bound(
    opts: dict[str, Any], key: str, exclusive_key: str, column: str
) -> tuple[float | None, bool]:
    """A bound and whether it is exclusive. ODCS v3.0.2 spells an exclusive bound as a flag
    on it (``minimum: 0, exclusiveMinimum: true``); the JSON Schema 2020 / ODCS v3.1 number
    (``exclusiveMinimum: 0``) is read as the same bound, though ``datacontract lint`` rejects
    it under apiVersion v3.0.2."""
    exclusive = opts.get(exclusive_key)
    value = opts.get(key)
    if isinstance(exclusive, bool) or exclusive is None:
        if exclusive and value is None:
            raise ConfigurationError(
                f"column {column}: logicalTypeOptions {exclusive_key}: true needs {key} (the "
                f"bound it makes exclusive), e.g. {key}: 0, {exclusive_key}: true"
            )
        return (float(value) if value is not None else None), bool(exclusive)
    return float(exclusive), True


def _severity(value: object, where: str) -> Severity:
    sev = _SEVERITIES.get(str(value or "fatal").lower())
    if sev is None:
        raise ConfigurationError(f"{where}: severity {value!r} must be fatal or warning")
    return sev


def _primary_key_rule(key: list[str]) -> Rule:
    """Several ``primaryKey`` columns are one key: their combination is unique, not each."""
    listed = ", ".join(key)
    return Rule(
        id=PRIMARY_KEY_RULE,
        kind="unique",
        columns=tuple(key),
        category=REGISTRY["unique"].category,
        message=f"the primary key ({listed}) must be unique within a delivery",
        expected=f"each combination of {listed} once",
    )


def _column_rules(col: ColumnSpec, custom: dict[str, Any], *, composite: bool) -> list[Rule]:
    """The rules a column's declarations imply, one per declared kind (``rule_kinds``)."""
    overrides = custom.get("severity", {}) or {}
    if not isinstance(overrides, dict):
        raise ConfigurationError(f"column {col.name}: severity must map rule kinds to levels")
    unknown = sorted(set(overrides) - set(REGISTRY))
    if unknown:
        raise ConfigurationError(
            f"column {col.name}: severity names unknown rule kinds {unknown}; "
            f"use {sorted(REGISTRY)}"
        )
    rules: list[Rule] = []
    for kind, spec in REGISTRY.items():
        if not spec.declared(col) or (kind == "unique" and composite and not col.unique):
            continue  # several primaryKey columns are one composite rule
        message, expected = spec.words(col)
        rules.append(
            Rule(
                id=f"{col.name}.{kind}",
                kind=kind,
                column=col.name,
                columns=(col.name,),
                severity=_severity(overrides.get(kind, "fatal"), f"column {col.name} rule {kind}"),
                category=spec.category,
                message=message,
                expected=expected[:MAX_EXPECTED_CHARS],
            )
        )
    return rules


def _quality_rules(
    quality: list[DataQuality], columns: list[str], default_column: str | None
) -> list[Rule]:
    return [_quality_rule(q, columns, default_column) for q in quality]


def _where(q: DataQuality) -> str:
    return f"quality rule {q.id or q.name or '?'}"


def _quality_category(q: DataQuality) -> Category | None:
    """Flux's category from the customProperty ``category``, else None (the rule's default).

    ``dimension`` must be one of ODCS's: Flux's ``existence`` is not, so it is a category."""
    dimension = (q.dimension or "").lower()
    if dimension and dimension not in ODCS_DIMENSIONS:
        hint = (
            f"give Flux's category as customProperties: [{{property: category, value: "
            f"{dimension}}}]"
            if dimension in _CATEGORIES
            else f"use one of {sorted(ODCS_DIMENSIONS)}"
        )
        raise ConfigurationError(
            f"{_where(q)}: dimension {q.dimension!r} is not an ODCS dimension; {hint}"
        )
    category = _custom(q.customProperties).get("category")
    if category is None:
        return None
    if str(category).lower() not in _CATEGORIES:
        raise ConfigurationError(
            f"{_where(q)}: customProperty category {category!r} is not one of {sorted(_CATEGORIES)}"
        )
    return cast(Category, str(category).lower())


def _sum_rule_spelling(q: DataQuality) -> DataQuality:
    """ODCS v3.0.2 requires ``implementation`` on a custom rule: a Flux sum reconciliation is
    ``implementation: {rule: sumReconciliation, arguments: {...}}``. The cross-rule compiler
    reads rule and arguments beside ``engine`` (the earlier Flux spelling, still read), so
    they are moved there."""
    impl = q.implementation
    if not (q.type == "custom" and (q.engine or "").lower() == "flux" and isinstance(impl, dict)):
        return q
    arguments = impl.get("arguments")
    if (
        impl.get("rule") != SUM_RECONCILIATION
        or not isinstance(arguments, dict)
        or set(impl) != {"rule", "arguments"}
        or q.rule is not None
        or q.arguments is not None
    ):
        raise ConfigurationError(
            f"{_where(q)}: an implementation mapping reads {{rule: {SUM_RECONCILIATION}, "
            "arguments: {key, column, otherDataset, ...}}, with no rule or arguments beside "
            f"it; got implementation keys {sorted(impl)}"
        )
    return q.model_copy(
        update={"rule": SUM_RECONCILIATION, "arguments": arguments, "implementation": None}
    )


def _quality_rule(q: DataQuality, columns: list[str], default_column: str | None) -> Rule:
    where = _where(q)
    rule_id = q.id
    if not rule_id:
        raise ConfigurationError(f"{where}: every quality rule needs a stable id")
    check_slug(rule_id.replace(".", "_"), f"{where} id")
    severity = _severity(q.severity, where)
    message = (q.description or q.name or rule_id).strip()
    category = _quality_category(q)
    if q.type == "custom" and (q.engine or "").lower() == "flux":
        if isinstance(q.implementation, dict):
            raise ConfigurationError(
                f"{where}: an implementation mapping ({SUM_RECONCILIATION}) belongs in the "
                "schema's quality, not a property's; a row rule's implementation is a SQL "
                "boolean expression"
            )
        expression = str(q.implementation or "").strip()
        referenced = _expression_columns(expression, columns, where)
        dimension = (q.dimension or "").lower()
        return Rule(
            id=rule_id,
            kind="expression",
            column=default_column or (referenced[0] if len(referenced) == 1 else None),
            columns=tuple(referenced),
            severity=severity,
            category=category
            or (cast(Category, dimension) if dimension in _CATEGORIES else "accuracy"),
            message=message,
            expected=expression[:MAX_EXPECTED_CHARS],
            expression=expression,
        )
    table_level = q.type == "library" and default_column is None
    if table_level and (q.rule or "").lower() == "duplicatevalues":
        return _duplicate_rows_rule(q, rule_id, columns, severity, message, category)
    if q.type == "library" and default_column is not None:
        if q.metric is not None and q.metric != q.rule:
            raise ConfigurationError(
                f"{where}: metric {q.metric!r} is the ODCS v3.1 spelling; ODCS v3.0.2 names "
                f"a library check with rule: write rule: {q.metric}"
            )
        metric = (q.rule or "").lower()
        kinds: dict[str, tuple[RuleKind, str]] = {
            "nullvalues": ("required", "a value"),
            "duplicatevalues": ("unique", "a value not repeated"),
        }
        if metric in kinds:
            kind, expected = kinds[metric]
            return Rule(
                id=rule_id,
                kind=kind,
                column=default_column,
                columns=(default_column,),
                severity=severity,
                category=category or ("completeness" if kind == "required" else "accuracy"),
                message=message,
                expected=expected,
            )
    raise ConfigurationError(
        f"{where}: unsupported quality rule (type={q.type!r}, engine={q.engine!r}, "
        f"rule={q.rule!r}); use type custom + engine flux, or type library with rule "
        "nullValues / duplicateValues on a property"
    )


def _duplicate_rows_rule(
    q: DataQuality,
    rule_id: str,
    columns: list[str],
    severity: Severity,
    message: str,
    category: Category | None,
) -> Rule:
    """A table-level ``duplicateValues``: the listed ``arguments.properties`` together are a
    key (an empty part: no key), or, without arguments, whole rows must not repeat (exact
    duplicates, empty fields matching)."""
    where = _where(q)
    arguments = q.arguments or {}
    listed = arguments.get("properties") if isinstance(arguments, dict) else None
    if listed is not None and (
        not isinstance(listed, list) or len(listed) < 1 or not set(listed) <= set(columns)
    ):
        raise ConfigurationError(
            f"{where}: arguments.properties must list columns of the table (have "
            f"{', '.join(columns)}), got {listed!r}"
        )
    key = tuple(listed) if listed else tuple(columns)
    return Rule(
        id=rule_id,
        kind="unique",
        column=key[0] if len(key) == 1 else None,
        columns=key,
        severity=severity,
        category=category or REGISTRY["unique"].category,
        message=message,
        expected=(f"each combination of {', '.join(key)} once" if listed else "each row once"),
        nulls_match=listed is None,
    )


def _expression_columns(expression: str, columns: list[str], where: str) -> list[str]:
    """Compile the SQL expression once at load so a typo fails definitions, not a run."""
    if not expression:
        raise ConfigurationError(f"{where}: implementation (a SQL boolean expression) is empty")
    try:
        roots = pl.sql_expr(expression).meta.root_names()
    except (pl.exceptions.PolarsError, ValueError) as exc:
        raise ConfigurationError(f"{where}: cannot parse {expression!r}: {exc}") from exc
    unknown = sorted(set(roots) - set(columns))
    if unknown:
        raise ConfigurationError(f"{where}: {expression!r} names unknown columns {unknown}")
    return sorted(set(roots), key=roots.index)
