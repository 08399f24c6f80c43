"""Drift: a window's sampled inputs and predictions against the version's reference
profile (domain.profile): PSI over the reference's deciles or categories, with a one-sample
Kolmogorov-Smirnov test against the reference's CDF (numeric) or chi-square (categorical).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from registry_service.domain.profile import OTHER, category_of, is_number

PREDICTION = "__prediction__"
PSI_BINS = 10
PSI_FLOOR = 1e-4  # empty bins would make PSI infinite
DEFAULT_PSI = 0.2
DEFAULT_P_VALUE = 0.01


@dataclass(frozen=True)
class Thresholds:
    psi: float = DEFAULT_PSI
    p_value: float = DEFAULT_P_VALUE


def compare(
    reference: dict[str, Any], current: list[Any], thresholds: Thresholds
) -> dict[str, Any] | None:
    """One feature's drift: current values against its reference profile."""
    if reference["kind"] == "numeric":
        data = np.asarray([v for v in current if is_number(v)], dtype=float)
        data = data[np.isfinite(data)]
        if not data.size:
            return None
        psi, statistic, p_value = _numeric(reference["quantiles"], data)
        test = "ks"
    else:
        observed = Counter(category_of(v) for v in current if v is not None)
        if not observed:
            return None
        psi, statistic, p_value = _categorical(reference["shares"], observed)
        test = "chi-square"
    psi_exceeded = psi >= thresholds.psi
    significant = p_value < thresholds.p_value
    return {
        "kind": reference["kind"],
        "count": int(data.size) if reference["kind"] == "numeric" else sum(observed.values()),
        "psi": psi,
        "psi_threshold": thresholds.psi,
        "psi_exceeded": psi_exceeded,
        "test": test,
        "statistic": statistic,
        "p_value": p_value,
        "p_value_threshold": thresholds.p_value,
        "significant": significant,
        # Material and not chance: on thousands of rows a test finds any difference
        # significant, and on a few rows PSI is noise; drift needs both.
        "drifted": psi_exceeded and significant,
    }


def _psi(expected: np.ndarray, actual: np.ndarray) -> float:
    e = np.clip(expected, PSI_FLOOR, None)
    a = np.clip(actual, PSI_FLOOR, None)
    return float(np.sum((a - e) * np.log(a / e)))


def _numeric(quantiles: list[float], data: np.ndarray) -> tuple[float, float, float]:
    q = np.asarray(quantiles, dtype=float)
    probs = np.linspace(0, 1, q.size)
    # Reference deciles as bin edges; tied edges (a spike at one value) merge bins.
    edges = np.unique(q[np.linspace(0, q.size - 1, PSI_BINS + 1).round().astype(int)][1:-1])
    ref_cdf = np.interp(edges, q, probs)
    expected = np.diff(np.concatenate([[0.0], ref_cdf, [1.0]]))
    # Bins are (e[i-1], e[i]]: a value equal to an edge falls in the bin the reference
    # CDF at that edge counts it in.
    counts = np.bincount(np.searchsorted(edges, data, side="left"), minlength=edges.size + 1)
    actual = counts / data.size
    psi = _psi(expected, actual)
    if q[0] == q[-1]:  # a constant reference: KS against a point mass
        result = stats.kstest(data, lambda x: (np.asarray(x) >= q[0]).astype(float))
    else:
        result = stats.kstest(data, lambda x: np.interp(x, q, probs, left=0.0, right=1.0))
    return psi, float(result.statistic), float(result.pvalue)


def _categorical(shares: dict[str, float], observed: Counter) -> tuple[float, float, float]:
    categories = sorted(set(shares) | {OTHER})
    known = set(shares)
    counts = Counter()
    for value, n in observed.items():
        counts[value if value in known else OTHER] += n
    total = sum(counts.values())
    expected = np.array([max(shares.get(c, 0.0), PSI_FLOOR) for c in categories])
    expected = expected / expected.sum()
    actual = np.array([counts.get(c, 0) for c in categories], dtype=float)
    psi = _psi(expected, actual / total)
    result = stats.chisquare(actual, expected * total)
    return psi, float(result.statistic), float(result.pvalue)


def verdict(features: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    drifted = sorted(name for name, r in features.items() if r and r["drifted"])
    compared = [name for name, r in features.items() if r]
    return {
        "drift": bool(drifted),
        "drifted_features": drifted,
        "compared": len(compared),
    }
