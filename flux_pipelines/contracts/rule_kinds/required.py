"""``<column>.required``: a value must be present (null spellings count as absent)."""

from flux_pipelines.contracts.model import ColumnSpec
from flux_pipelines.contracts.rule_kinds.base import RuleKindSpec


def _words(column: ColumnSpec) -> tuple[str, str]:
    return f"{column.name} is required but was empty", "a value"


KIND = RuleKindSpec(
    kind="required",
    category="existence",
    declared=lambda column: column.required,
    words=_words,
    violation=lambda cell: cell.text.is_null(),
    defects=lambda column, valid: [None, "", "  "],  # pandera: nullable=False
)
