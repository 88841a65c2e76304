"""Flux's own YAML settings files (access, alerts, SLOs, retention) read one way: parsed,
validated by their pydantic model, and refused with a ``ConfigurationError`` that names the
file and every bad entry, never a raw YAML or pydantic error."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from flux_pipelines.errors import ConfigurationError

M = TypeVar("M", bound=BaseModel)


def problems(errors: Iterable[Mapping[str, Any]]) -> str:
    """pydantic's (or FastAPI's) validation errors as ``where: what; ...``."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())) or '(top)'}: {e.get('msg', '')}"
        for e in errors
    )


def read_yaml(path: Path, what: str, *, missing: Any = ...) -> Any:
    """A YAML document; ``missing`` (when given) stands in for an absent file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        if missing is not ...:
            return missing
        raise ConfigurationError(f"{what} {path}: cannot be read ({exc})") from exc
    except OSError as exc:
        raise ConfigurationError(f"{what} {path}: cannot be read ({exc})") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{what} {path}: not valid YAML ({exc})") from exc


def validated(model: type[M], doc: Any, path: Path, what: str) -> M:
    """``doc`` as ``model``, or a ``ConfigurationError`` naming the file and each entry."""
    if doc is not None and not isinstance(doc, dict):
        raise ConfigurationError(f"{what} {path}: expected a mapping at the top")
    try:
        return model.model_validate(doc or {})
    except ValidationError as exc:
        raise ConfigurationError(f"{what} {path}: {problems(exc.errors())}") from exc


def load_model(model: type[M], path: Path, what: str, *, missing: Any = ...) -> M:
    """Read and validate one settings file (``missing``: the document of an absent file)."""
    return validated(model, read_yaml(path, what, missing=missing), path, what)
