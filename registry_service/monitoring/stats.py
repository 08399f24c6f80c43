"""Statistics over rollups: classification and regression figures, the A/B tests and
confidence intervals. Distributions come from scipy; nothing here touches the database."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from scipy import stats


def classification(confusion: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Accuracy and macro-averaged precision, recall and F1 from {predicted: {actual: n}}."""
    # Counts below zero come from replacing ground truth that was never counted.
    confusion = {p: {a: n for a, n in row.items() if n > 0} for p, row in confusion.items()}
    confusion = {p: row for p, row in confusion.items() if row}
    total = sum(n for row in confusion.values() for n in row.values())
    if not total:
        return {}
    correct = sum(row.get(label, 0) for label, row in confusion.items())
    labels = set(confusion) | {a for row in confusion.values() for a in row}
    precisions, recalls, f1s = [], [], []
    for label in sorted(labels):
        tp = confusion.get(label, {}).get(label, 0)
        predicted = sum(confusion.get(label, {}).values())
        actual = sum(row.get(label, 0) for row in confusion.values())
        p = tp / predicted if predicted else 0.0
        r = tp / actual if actual else 0.0
        precisions.append(p)
        recalls.append(r)
        f1s.append(2 * p * r / (p + r) if p + r else 0.0)
    return {
        "accuracy": correct / total,
        "precision": sum(precisions) / len(labels),
        "recall": sum(recalls) / len(labels),
        "f1": sum(f1s) / len(labels),
        "classes": len(labels),
    }


def regression(n: int, abs_sum: float, sq_sum: float) -> dict[str, Any]:
    if not n:
        return {}
    return {"mae": abs_sum / n, "rmse": math.sqrt(sq_sum / n)}


@dataclass(frozen=True)
class Side:
    """One side of an A/B test on one metric: successes/n for a proportion, or
    mean/std/n for a continuous metric."""

    n: int
    mean: float | None
    std: float | None = None
    successes: int | None = None


def proportion_interval(successes: int, n: int, level: float = 0.95) -> list[float] | None:
    if n <= 0 or not 0 <= successes <= n:
        return None
    ci = stats.binomtest(successes, n).proportion_ci(confidence_level=level, method="wilson")
    return [float(ci.low), float(ci.high)]


def mean_interval(
    mean: float, std: float | None, n: int, level: float = 0.95
) -> list[float] | None:
    if n < 2 or std is None:
        return None
    if std == 0:
        return [mean, mean]
    low, high = stats.t.interval(level, n - 1, loc=mean, scale=std / math.sqrt(n))
    return [float(low), float(high)]


def two_proportion_z(a: Side, b: Side) -> tuple[float, float] | None:
    """Two-sided pooled two-proportion z-test: (z, p-value) of b against a."""
    if not a.n or not b.n or a.successes is None or b.successes is None:
        return None
    if not (0 <= a.successes <= a.n and 0 <= b.successes <= b.n):
        return None
    pooled = (a.successes + b.successes) / (a.n + b.n)
    se = math.sqrt(pooled * (1 - pooled) * (1 / a.n + 1 / b.n))
    if se == 0:
        return (0.0, 1.0)
    z = (b.successes / b.n - a.successes / a.n) / se
    return z, float(2 * stats.norm.sf(abs(z)))


def welch_t(a: Side, b: Side) -> tuple[float, float] | None:
    """Welch's two-sided t-test: (t, p-value) of b against a."""
    if a.n < 2 or b.n < 2 or a.mean is None or b.mean is None:
        return None
    if not a.std and not b.std:
        return (0.0, 1.0) if a.mean == b.mean else (math.copysign(math.inf, b.mean - a.mean), 0.0)
    result = stats.ttest_ind_from_stats(
        b.mean, b.std or 0.0, b.n, a.mean, a.std or 0.0, a.n, equal_var=False
    )
    return float(result.statistic), float(result.pvalue)
