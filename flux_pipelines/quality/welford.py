"""Running mean and variance in O(1) memory (Welford), with removal for re-loaded days."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class RunningStats:
    """n, mean and the sum of squared deviations (m2) of the values folded in so far.

    ``remove`` reverses ``add`` exactly (up to rounding), so re-loading a day replaces its
    value instead of counting it twice. Non-finite values are never folded in.
    """

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, x: float) -> bool:
        if not math.isfinite(x):
            return False
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)
        return True

    def remove(self, x: float) -> bool:
        if not math.isfinite(x) or self.n == 0:
            return False
        if self.n == 1:
            self.n, self.mean, self.m2 = 0, 0.0, 0.0
            return True
        old_mean = (self.n * self.mean - x) / (self.n - 1)
        self.m2 = max(0.0, self.m2 - (x - old_mean) * (x - self.mean))
        self.mean = old_mean
        self.n -= 1
        return True

    @property
    def variance(self) -> float:
        return self.m2 / (self.n - 1) if self.n > 1 else 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.variance)

    def z(self, x: float) -> float | None:
        """Standard score of x; None when undefined (no spread yet, or x not finite)."""
        spread = self.std
        if self.n < 2 or not math.isfinite(x) or spread <= 1e-12 * max(1.0, abs(self.mean)):
            return None
        return (x - self.mean) / spread
