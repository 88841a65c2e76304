"""The rule kinds Flux knows, one module each (``base.py`` says what a kind declares)."""

from flux_pipelines.contracts.model import RuleKind
from flux_pipelines.contracts.rule_kinds import (
    allowed_values,
    bounds,
    keys,
    required,
    text_shape,
    type_,
)
from flux_pipelines.contracts.rule_kinds.base import Cell, RuleKindSpec

# In the order a column's rules are compiled and reported.
REGISTRY: dict[RuleKind, RuleKindSpec] = {
    spec.kind: spec
    for spec in (
        required.KIND,
        type_.KIND,
        allowed_values.KIND,
        bounds.MINIMUM,
        bounds.MAXIMUM,
        text_shape.PATTERN,
        text_shape.MIN_LENGTH,
        text_shape.MAX_LENGTH,
        keys.UNIQUE,
        keys.EXPRESSION,
    )
}

__all__ = ["REGISTRY", "Cell", "RuleKindSpec"]
