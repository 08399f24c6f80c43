"""Dataset profiles: what a version's training data looked like, for drift.

Per feature, 101 quantiles (numeric) or category shares (categorical): small enough to
log with a training run, enough to test a window of live inputs against.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

FORMAT = "registry-profile/1"
ARTIFACT_PATH = "registry/dataset_profile.json"
OTHER = "__other__"
MAX_CATEGORIES = 50
MAX_FEATURES = 500


# Numbers beyond this are not profiled: their squares would overflow a float.
MAX_MAGNITUDE = 1e150
# A numeric feature with this few distinct values is profiled as categories: quantiles of
# a binary or small-integer feature make PSI and KS see drift in identical data.
MAX_DISCRETE = 10


def is_number(value: Any) -> bool:
    """A finite number a float can hold with room to square it."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, int):
        return abs(value) <= 2**63
    return math.isfinite(value) and abs(value) <= MAX_MAGNITUDE


def category_of(value: Any) -> str:
    """One spelling per category whichever source it came from: JSON true, CSV "true";
    1, 1.0 and "1" alike."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def feature_profile(values: Iterable[Any]) -> dict[str, Any] | None:
    present = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not present:
        return None
    if all(is_number(v) for v in present) and len(set(present)) > MAX_DISCRETE:
        data = np.asarray(present, dtype=float)
        return {
            "kind": "numeric",
            "count": int(data.size),
            "mean": float(data.mean()),
            "std": float(data.std(ddof=1)) if data.size > 1 else 0.0,
            "min": float(data.min()),
            "max": float(data.max()),
            "quantiles": [float(q) for q in np.quantile(data, np.linspace(0, 1, 101))],
        }
    counts = Counter(category_of(v) for v in present)
    top = dict(counts.most_common(MAX_CATEGORIES))
    rest = sum(counts.values()) - sum(top.values())
    if rest:
        top[OTHER] = rest
    total = sum(counts.values())
    return {
        "kind": "categorical",
        "count": total,
        "shares": {k: n / total for k, n in top.items()},
    }


def profile_of(
    columns: Mapping[str, Iterable[Any]], predictions: Iterable[Any] | None = None
) -> dict[str, Any]:
    """The profile of a dataset given as {feature: values} (and, optionally, predictions)."""
    features = {}
    rows = 0
    for name, values in columns.items():
        values = list(values)
        rows = max(rows, len(values))
        profile = feature_profile(values)
        if profile is not None:
            profile["missing"] = len(values) - profile["count"]
            features[str(name)] = profile
    prediction = feature_profile(predictions) if predictions is not None else None
    return {"format": FORMAT, "rows": rows, "features": features, "prediction": prediction}


def check_profile(data: Any) -> dict[str, Any]:
    """A profile read from elsewhere (a run artifact), checked; ValueError if malformed."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} document")
    features = data.get("features")
    if not isinstance(features, dict) or len(features) > MAX_FEATURES:
        raise ValueError(f"features must be an object of at most {MAX_FEATURES} entries")
    for name, feature in [*features.items(), ("prediction", data.get("prediction"))]:
        if feature is None and name == "prediction":
            continue
        kind = feature.get("kind") if isinstance(feature, dict) else None
        if kind == "numeric":
            q = feature.get("quantiles")
            if (
                not isinstance(q, list)
                or len(q) != 101
                or not all(is_number(v) and math.isfinite(v) for v in q)
                or any(b < a for a, b in itertools.pairwise(q))
            ):
                raise ValueError(f"{name}: quantiles must be 101 ascending numbers")
        elif kind == "categorical":
            shares = feature.get("shares")
            if (
                not isinstance(shares, dict)
                or not shares
                or not all(is_number(v) and v >= 0 for v in shares.values())
            ):
                raise ValueError(f"{name}: shares must map categories to fractions")
        else:
            raise ValueError(f"{name}: kind must be numeric or categorical")
    return data
