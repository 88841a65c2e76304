"""Memoising work derived from one contract object.

Definitions build an asset per agency, and agencies with the same severity overrides share
one contract object (``registry._as_seen_by``), so anything computed from a contract for the
UI (column schema, rule catalogue) is computed once per object, not once per agency.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

from flux_pipelines.contracts.model import Contract

T = TypeVar("T")
MAX_ENTRIES = 512


def per_contract(fn: Callable[[Contract], T]) -> Callable[[Contract], T]:
    """``fn`` cached per contract object (by identity; the entry holds the object, so its id
    cannot be reused by another contract while cached)."""
    cache: dict[int, tuple[Contract, T]] = {}

    @functools.wraps(fn)
    def cached(contract: Contract) -> T:
        hit = cache.get(id(contract))
        if hit is None or hit[0] is not contract:
            if len(cache) >= MAX_ENTRIES:
                cache.clear()
            hit = cache[id(contract)] = (contract, fn(contract))
        return hit[1]

    return cached
