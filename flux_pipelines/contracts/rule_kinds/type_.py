"""``<column>.type``: a non-string value must be of its column's type (validator.py says
which spellings are which type; a number format declared on the column is applied first)."""

from flux_pipelines.contracts.model import ColumnSpec, LogicalType
from flux_pipelines.contracts.rule_kinds.base import RuleKindSpec

TYPE_WORDS: dict[LogicalType, str] = {
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "date": "a date",
    "timestamp": "a date and time",
}
_NOT_OF_TYPE: dict[LogicalType, list[str]] = {
    "integer": ["12.5", "twelve", "1e999"],
    "number": ["n/a-value", "1,5", "1e999"],
    "boolean": ["maybe"],
    "date": ["2026-02-30", "yesterday"],
    "timestamp": ["2026-13-01T00:00:00", "soon"],
}


def _words(column: ColumnSpec) -> tuple[str, str]:
    word = TYPE_WORDS[column.logical_type]
    fmt = f" ({column.date_format})" if column.date_format else ""
    if column.number_format is not None:
        fmt = f" ({column.number_format.describe()})"
    return f"{column.name} must be {word}{fmt}", f"{word}{fmt}"


KIND = RuleKindSpec(
    kind="type",
    category="accuracy",
    declared=lambda column: column.logical_type != "string",
    words=_words,
    violation=lambda cell: cell.text.is_not_null() & cell.value.is_null(),
    defects=lambda column: list(_NOT_OF_TYPE.get(column.logical_type, [])),
)
