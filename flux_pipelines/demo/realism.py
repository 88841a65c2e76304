"""Dataset plug-ins: realism a contract cannot state, added to the generic deliveries.

Why: the generic generator draws every row on its own, which is right for most datasets but
leaves some with nothing to learn from (spending: every row a new recipient, so risk scoring
has no history). A plug-in registered here for a dataset reshapes that dataset's generated
deliveries; ``landing.py`` looks it up by the dataset's name and knows none of them. The
plug-ins register when ``flux_pipelines.demo`` is imported (its ``__init__``).
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from dataclasses import dataclass

from flux_pipelines.demo.delivery import GeneratedDelivery
from flux_pipelines.errors import ConfigurationError


@dataclass(frozen=True)
class Occasion:
    """Where a delivery belongs in the demo, for a plug-in that draws per agency or day."""

    agency: str
    day: dt.date
    seed: int  # the demo's seed
    # The delivery's own seeded stream: draw from it, never reseed, so the bytes of every
    # delivery stay a function of the demo's seed.
    rng: random.Random


Realism = Callable[[GeneratedDelivery, Occasion], GeneratedDelivery]
REALISM: dict[str, Realism] = {}  # dataset -> its plug-in (``register`` adds)


def register(dataset: str, realism: Realism) -> None:
    """Make ``realism`` reshape every generated delivery of ``dataset`` (once per dataset)."""
    if REALISM.get(dataset, realism) is not realism:
        raise ConfigurationError(f"dataset {dataset!r} already has a demo realism plug-in")
    REALISM[dataset] = realism


def realism_for(dataset: str) -> Realism | None:
    """The plug-in registered for ``dataset``, if any."""
    return REALISM.get(dataset)
