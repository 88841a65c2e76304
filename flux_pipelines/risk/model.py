"""The Isolation Forest over the documented feature vector, trained, versioned and stored.

The score is the forest's own anomaly score s = 2^(-E[h(x)] / c(n)) in (0, 1] (Liu et al.):
about 0.5 or below is ordinary, values near 1 are isolated in few splits. It is blended
with the rules score, which lives on the same [0, 1] scale.

Models are stored per agency as ``<version>.joblib`` with a ``current.json`` pointer that
carries the file's sha256; a model whose bytes do not match is not loaded (scoring falls
back to rules and says why). The version is the training time plus a hash of the training
matrix and parameters, so the same data and settings give the same suffix.

scikit-learn and joblib (over a second to import) are imported only where a model is trained,
saved or loaded: loading the definitions, which every run worker does, never needs them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from flux_pipelines.errors import FluxError
from flux_pipelines.files import replacing, sha256_file, write_atomic
from flux_pipelines.risk.features import FEATURE_COLUMNS, FEATURES

POINTER = "current.json"
SCORE_CHUNK = 250_000

if TYPE_CHECKING:
    from sklearn.ensemble import IsolationForest


class ModelUnavailable(FluxError):
    """No usable trained model: scoring continues on the rules alone and says this reason."""


@dataclass(frozen=True)
class RiskModel:
    version: str
    forest: IsolationForest
    features: tuple[str, ...]
    means: np.ndarray
    stds: np.ndarray
    trained_rows: int
    trained_at: str
    params: dict[str, object]

    def score(self, frame: pl.DataFrame) -> np.ndarray:
        """Anomaly score in (0, 1] per row; chunks scored on two threads (trees release the GIL)."""
        matrix = _matrix(frame, self.features)
        chunks = [matrix[i : i + SCORE_CHUNK] for i in range(0, len(matrix), SCORE_CHUNK)]
        if len(chunks) <= 1:
            scores: np.ndarray = -self.forest.score_samples(matrix)
            return scores
        with ThreadPoolExecutor(max_workers=2) as pool:
            parts = list(pool.map(self.forest.score_samples, chunks))
        return -np.concatenate(parts)

    def strongest_feature(self, frame: pl.DataFrame) -> np.ndarray:
        """Per row, the feature furthest from the training data (in training stds): the 'why'."""
        matrix = _matrix(frame, self.features)
        distance = np.abs(matrix - self.means) / np.where(self.stds > 0, self.stds, 1.0)
        names = np.array([c.removeprefix("f_") for c in self.features])
        return names[np.argmax(distance, axis=1)] if len(matrix) else names[:0]


def _matrix(frame: pl.DataFrame, columns: tuple[str, ...]) -> np.ndarray:
    return (
        frame.select(pl.col(c).cast(pl.Float64).fill_nan(0.0).fill_null(0.0) for c in columns)
        .to_numpy()
        .astype(np.float64)
    )


def train(
    vectors: pl.DataFrame,
    *,
    n_estimators: int = 100,
    max_samples: int = 256,
    seed: int = 0,
    now: dt.datetime | None = None,
) -> RiskModel:
    """Fit the forest on stored feature vectors (``f_*`` columns)."""
    import sklearn
    from sklearn.ensemble import IsolationForest

    matrix = _matrix(vectors, FEATURE_COLUMNS)
    params: dict[str, object] = {
        "n_estimators": n_estimators,
        "max_samples": min(max_samples, len(matrix)),
        "contamination": "auto",
        "random_state": seed,
    }
    forest = IsolationForest(**params).fit(matrix)
    digest = hashlib.sha256(matrix.tobytes())
    digest.update(json.dumps([params, FEATURE_COLUMNS, sklearn.__version__]).encode())
    trained_at = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    return RiskModel(
        version=f"{trained_at}-{digest.hexdigest()[:10]}",
        forest=forest,
        features=FEATURE_COLUMNS,
        means=matrix.mean(axis=0),
        stds=matrix.std(axis=0),
        trained_rows=len(matrix),
        trained_at=trained_at,
        params=params,
    )


def save(model: RiskModel, directory: Path) -> Path:
    """Write the model, then point ``current.json`` at it (atomically)."""
    import joblib
    import sklearn

    target = directory / f"{model.version}.joblib"
    with replacing(target) as tmp:
        joblib.dump(model, tmp)
    pointer = {
        "version": model.version,
        "file": target.name,
        "sha256": sha256_file(target),
        "features": list(model.features),
        "trained_rows": model.trained_rows,
        "sklearn": sklearn.__version__,
    }
    write_atomic(directory / POINTER, json.dumps(pointer, indent=2))
    return target


def load_current(directory: Path) -> RiskModel:
    """The model ``current.json`` points at; ModelUnavailable says why there is none."""
    pointer_path = directory / POINTER
    if not pointer_path.is_file():
        raise ModelUnavailable(
            f"no trained model in {directory} (the scoring step trains one when enough "
            "transactions are scored)"
        )
    pointer = json.loads(pointer_path.read_text())
    target = directory / pointer["file"]
    if not target.is_file():
        raise ModelUnavailable(f"model file {target} named by {pointer_path} is missing")
    if sha256_file(target) != pointer["sha256"]:
        raise ModelUnavailable(
            f"model file {target} does not match the sha256 in {pointer_path}: retrain it"
        )
    if tuple(pointer["features"]) != FEATURE_COLUMNS:
        raise ModelUnavailable(
            f"model {pointer['version']} was trained on other features than this code "
            f"computes ({len(pointer['features'])} vs {len(FEATURES)}): retrain it"
        )
    import joblib

    model: RiskModel = joblib.load(target)
    return model
