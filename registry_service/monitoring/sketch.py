"""A mergeable quantile sketch with 1% relative accuracy (the DDSketch scheme).

ddsketch's own mapping places values in log-spaced bins; the bins are kept here as plain
dicts so that per-minute rollups store them as JSON and merge by adding counts, which is
what a 24-hour window over 1,440 rows needs to stay fast.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from ddsketch.mapping import LogarithmicMapping

RELATIVE_ACCURACY = 0.01
_MAPPING = LogarithmicMapping(RELATIVE_ACCURACY)
# Beyond this a square overflows; such values are not kept (sums must stay finite).
MAX_MAGNITUDE = 1e150


class Sketch:
    __slots__ = ("count", "max", "min", "neg", "pos", "sum", "sumsq", "zero")

    def __init__(self) -> None:
        self.pos: dict[int, int] = {}
        self.neg: dict[int, int] = {}
        self.zero = 0
        self.count = 0
        self.sum = 0.0
        self.sumsq = 0.0
        self.min = math.inf
        self.max = -math.inf

    @classmethod
    def of(cls, values: Iterable[float]) -> Sketch:
        sketch = cls()
        for value in values:
            sketch.add(value)
        return sketch

    def add(self, value: float) -> None:
        if not math.isfinite(value) or abs(value) > MAX_MAGNITUDE:
            return
        magnitude = abs(value)
        if magnitude < _MAPPING.min_possible:
            self.zero += 1
        else:
            bins = self.pos if value > 0 else self.neg
            key = _MAPPING.key(magnitude)
            bins[key] = bins.get(key, 0) + 1
        self.count += 1
        self.sum += value
        self.sumsq += value * value
        self.min = min(self.min, value)
        self.max = max(self.max, value)

    def merge(self, other: Sketch) -> Sketch:
        for mine, theirs in ((self.pos, other.pos), (self.neg, other.neg)):
            for key, n in theirs.items():
                mine[key] = mine.get(key, 0) + n
        self.zero += other.zero
        self.count += other.count
        self.sum += other.sum
        self.sumsq += other.sumsq
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        return self

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation (n - 1), as Welch's test expects."""
        if self.count < 2:
            return None
        variance = (self.sumsq - self.sum * self.sum / self.count) / (self.count - 1)
        return math.sqrt(max(variance, 0.0))

    def _bins(self) -> list[tuple[float, int]]:
        """(representative value, count) in ascending order of value."""
        ordered = [(-_MAPPING.value(k), n) for k, n in sorted(self.neg.items(), reverse=True)]
        if self.zero:
            ordered.append((0.0, self.zero))
        ordered.extend((_MAPPING.value(k), n) for k, n in sorted(self.pos.items()))
        return ordered

    def quantiles(self, qs: Iterable[float]) -> list[float | None]:
        if not self.count:
            return [None for _ in qs]
        bins = self._bins()
        out = []
        for q in qs:
            rank = q * (self.count - 1)
            seen = 0
            value = bins[-1][0]
            for v, n in bins:
                seen += n
                if seen > rank:
                    value = v
                    break
            out.append(min(max(value, self.min), self.max))
        return out

    def quantile(self, q: float) -> float | None:
        return self.quantiles([q])[0]

    def histogram(self, bins: int = 10) -> dict[str, list[float]]:
        """Equal-width counts between min and max, each sketch bin at its value."""
        if not self.count:
            return {"edges": [], "counts": []}
        low, high = self.min, self.max
        width = (high - low) / bins
        if not (math.isfinite(width) and width > 0):
            return {"edges": [low, high], "counts": [self.count]}
        counts = [0] * bins
        for value, n in self._bins():
            index = min(int((min(max(value, low), high) - low) / width), bins - 1)
            counts[index] += n
        return {"edges": [low + i * width for i in range(bins + 1)], "counts": counts}

    def to_json(self) -> dict[str, Any]:
        if not self.count:
            return {}
        return {
            "p": {str(k): n for k, n in self.pos.items()},
            "n": {str(k): n for k, n in self.neg.items()},
            "z": self.zero,
            "c": self.count,
            "s": self.sum,
            "ss": self.sumsq,
            "lo": self.min,
            "hi": self.max,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Sketch:
        sketch = cls()
        if data:
            sketch.merge_json(data)
        return sketch

    def merge_json(self, data: dict[str, Any] | None) -> Sketch:
        """Merge a stored sketch without building an object for it (the hot path)."""
        if not data:
            return self
        for mine, theirs in ((self.pos, data["p"]), (self.neg, data["n"])):
            for key, n in theirs.items():
                k = int(key)
                mine[k] = mine.get(k, 0) + n
        # A null here was a non-finite figure stored by an earlier version: read as 0.
        self.zero += data.get("z") or 0
        self.count += data.get("c") or 0
        self.sum += data.get("s") or 0.0
        self.sumsq += data.get("ss") or 0.0
        self.min = min(self.min, data["lo"] if data.get("lo") is not None else math.inf)
        self.max = max(self.max, data["hi"] if data.get("hi") is not None else -math.inf)
        return self
