"""The generator's own error."""

from __future__ import annotations

from flux_pipelines.errors import ConfigurationError


class GenerationError(ConfigurationError):
    """The contract cannot be satisfied by generated rows (e.g. contradictory rules)."""
