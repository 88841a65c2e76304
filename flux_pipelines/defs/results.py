"""``Materialized``: what an asset body returns, typed for mypy and plain for Dagster.

Dagster recognises a result annotation by identity (``MaterializeResult``), so a subscripted
one (``MaterializeResult[None]``, which mypy --strict asks for) fails an asset with checks
at definitions load ("Expected Tuple annotation for multiple outputs"). The type checker
sees the subscripted type, Dagster the class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:
    Materialized = dg.MaterializeResult[None]
else:
    Materialized = dg.MaterializeResult
