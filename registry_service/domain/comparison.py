"""Side-by-side tables of metrics or params, shared by version and run comparisons; the
candidate beside its champion for reviewers; and the evidence a decision may rest on: a
version's metrics as recorded at registration, with what its run shows differently now."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ComparedValue:
    key: str
    values: dict[str, Any]
    differs: bool
    # Only for metrics, and only when the first column has the value.
    delta_from_first: dict[str, float | None] | None = None


def side_by_side(
    columns: Mapping[str, Mapping[str, Any]],
    numeric: bool,
    keys: Iterable[str] | None = None,
) -> list[ComparedValue]:
    """One row per key across ``columns`` (column label to its values), in key order.

    ``keys`` restricts the rows; a key no column has still gets a row of nulls, so a
    caller asking for a metric learns it is missing rather than seeing it vanish.
    """
    wanted = sorted(set(keys) if keys is not None else {k for c in columns.values() for k in c})
    first = next(iter(columns.values()), {})
    rows = []
    for key in wanted:
        values = {label: column.get(key) for label, column in columns.items()}
        delta = None
        if numeric and first.get(key) is not None:
            ref = first[key]
            delta = {label: (v - ref if v is not None else None) for label, v in values.items()}
        rows.append(
            ComparedValue(
                key=key,
                values=values,
                differs=len({repr(v) for v in values.values()}) > 1,
                delta_from_first=delta,
            )
        )
    return rows


# Metric names whose smaller values are better; matched on word parts of the name.
_LOWER_IS_BETTER = re.compile(
    r"(^|[_.\-/])(loss|logloss|error|err|mae|mse|rmse|mape|smape|brier|perplexity|"
    r"latency|latency_ms|duration|time|seconds|secs|ms|fpr|fnr|cost)([_.\-/]|$)",
    re.IGNORECASE,
)
_HIGHER_IS_BETTER = re.compile(
    r"(^|[_.\-/])(auc|roc_auc|pr_auc|accuracy|acc|precision|recall|f1|f1_score|r2|"
    r"score|map|ndcg|tpr|tnr|specificity|kappa|mcc|iou|bleu|rouge)([_.\-/]|$)",
    re.IGNORECASE,
)


def metric_direction(name: str, primary: tuple[str, bool] | None = None) -> bool | None:
    """True when higher is better, False when lower is, None when the name does not say.

    ``primary`` is the policy's decisive metric and direction, which overrides names.
    """
    if primary is not None and name == primary[0]:
        return primary[1]
    if _LOWER_IS_BETTER.search(name):
        return False
    if _HIGHER_IS_BETTER.search(name):
        return True
    return None


# A version's metrics as evidence: recorded when it was registered through the registry
# (frozen), or, for versions registered outside it, its run's as they are now (unfrozen).
FROZEN, UNFROZEN = "frozen", "unfrozen"


@dataclass(frozen=True)
class MetricChange:
    """A metric the run shows differently from what was recorded at registration; a
    metric logged after registration has ``registered`` None."""

    key: str
    registered: float | None
    current: float | None


@dataclass(frozen=True)
class Evidence:
    """The metrics a decision rests on, and how far to trust them."""

    metrics: Mapping[str, float]
    state: str  # FROZEN or UNFROZEN
    # Differences between the run now and the record; None when the run was not read
    # (gone, or MLflow did not answer), so nobody can say.
    changed_since_registration: tuple[MetricChange, ...] | None = ()

    def as_dict(self) -> dict[str, Any]:
        changed = self.changed_since_registration
        return {
            "metrics_state": self.state,
            "changed_since_registration": None
            if changed is None
            else [
                {"key": c.key, "registered": c.registered, "current": c.current} for c in changed
            ],
        }


def _same(a: Any, b: Any) -> bool:
    if a == b:
        return True
    return _is_nan(a) and _is_nan(b)


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def frozen_evidence(
    registered: Mapping[str, float] | None, current: Mapping[str, float] | None
) -> Evidence:
    """``registered``: the metrics recorded at registration (None when there is no
    record); ``current``: the run's metrics now (None when the run cannot be read)."""
    if registered is None:
        return Evidence(dict(current or {}), UNFROZEN, None if current is None else ())
    if current is None:
        return Evidence(dict(registered), FROZEN, None)
    changes = tuple(
        MetricChange(key, registered.get(key), current.get(key))
        for key in sorted(set(registered) | set(current))
        if not _same(registered.get(key), current.get(key))
    )
    return Evidence(dict(registered), FROZEN, changes)


@dataclass(frozen=True)
class ReviewSide:
    """What a reviewer weighs about one version: its figures and where it came from."""

    version: int
    metrics: Mapping[str, float | None]
    params: Mapping[str, str]
    lineage: Mapping[str, Any]
    # FROZEN: ``metrics`` are those recorded at registration; UNFROZEN: the run's now.
    metrics_state: str = FROZEN
    changed_since_registration: tuple[MetricChange, ...] | None = ()


@dataclass(frozen=True)
class MetricVerdict:
    key: str
    candidate: float | None
    champion: float | None
    delta: float | None
    relative_delta: float | None
    higher_is_better: bool | None
    better: str | None  # candidate, champion, equal; None when unknown


@dataclass(frozen=True)
class ParamDifference:
    key: str
    candidate: str | None
    champion: str | None


@dataclass(frozen=True)
class ChampionComparison:
    candidate: ReviewSide
    champion: ReviewSide | None
    primary_metric: str | None
    metrics: list[MetricVerdict]
    params_differing: list[ParamDifference]
    params_same: int


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _verdict(key: str, candidate: Any, champion: Any, higher: bool | None) -> MetricVerdict:
    new, old = _finite(candidate), _finite(champion)
    delta = new - old if new is not None and old is not None else None
    relative = delta / abs(old) if delta is not None and old else None
    better = None
    if delta is not None and higher is not None:
        better = "equal" if delta == 0 else "candidate" if (delta > 0) == higher else "champion"
    return MetricVerdict(key, new, old, delta, relative, higher, better)


def compare_with_champion(
    candidate: ReviewSide, champion: ReviewSide | None, primary: tuple[str, bool] | None
) -> ChampionComparison:
    """The candidate beside the version it would replace, metric by metric.

    Metrics are ordered with the policy's decisive one first, then by name.
    """
    old_metrics = champion.metrics if champion else {}
    keys = sorted(set(candidate.metrics) | set(old_metrics))
    if primary is not None and primary[0] in keys:
        keys.remove(primary[0])
        keys.insert(0, primary[0])
    metrics = [
        _verdict(k, candidate.metrics.get(k), old_metrics.get(k), metric_direction(k, primary))
        for k in keys
    ]
    old_params = champion.params if champion else {}
    differing, same = [], 0
    for key in sorted(set(candidate.params) | set(old_params)):
        new, old = candidate.params.get(key), old_params.get(key)
        if new == old:
            same += 1
        else:
            differing.append(ParamDifference(key, new, old))
    return ChampionComparison(
        candidate=candidate,
        champion=champion,
        primary_metric=primary[0] if primary else None,
        metrics=metrics,
        params_differing=differing if champion else [],
        params_same=same if champion else 0,
    )
