"""Champion/challenger evaluation against a model's auto-promotion criteria: pure rules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from registry_service.domain.policy import Target, TargetType

DEFAULT_IMPROVEMENT = 0.05


@dataclass(frozen=True)
class AutoPromotion:
    """When a challenger may be promoted without a person asking."""

    metric: str
    higher_is_better: bool = True
    min_value: float | None = None
    min_improvement: float = DEFAULT_IMPROVEMENT  # relative, over the champion
    max_latency_ms: float | None = None
    latency_metric: str = "latency_ms"
    target_type: TargetType = TargetType.STAGE
    target: str = "Staging"
    champion_alias: str | None = None  # else the champion is the Production version

    @property
    def destination(self) -> Target:
        return Target(self.target_type, self.target)

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "min_value": self.min_value,
            "min_improvement": self.min_improvement,
            "max_latency_ms": self.max_latency_ms,
            "latency_metric": self.latency_metric,
            "target_type": self.target_type.value,
            "target": self.target,
            "champion_alias": self.champion_alias,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AutoPromotion:
        return cls(**{**data, "target_type": TargetType(data.get("target_type", "stage"))})


@dataclass(frozen=True)
class Criterion:
    name: str
    passed: bool
    detail: str
    challenger: float | None = None
    champion: float | None = None
    threshold: float | None = None
    improvement: float | None = None


@dataclass(frozen=True)
class Decision:
    passed: bool
    criteria: list[Criterion]
    champion_version: int | None
    challenger_version: int
    metric: str
    request: Any = None
    dry_run: bool = True
    notes: list[str] = field(default_factory=list)
    # Per side: whether its metrics were frozen at registration, and what changed since.
    evidence: dict[str, Any] = field(default_factory=dict)


def decide(
    criteria: AutoPromotion,
    challenger_version: int,
    challenger: dict[str, float],
    champion_version: int | None,
    champion: dict[str, float] | None,
) -> Decision:
    metric, results = criteria.metric, []
    value = challenger.get(metric)
    if value is None:
        results.append(Criterion("metric_present", False, f"challenger has no {metric!r}"))
    else:
        results.append(Criterion("metric_present", True, f"{metric} = {value}", value))
        if criteria.min_value is not None:
            ok = (
                value >= criteria.min_value
                if criteria.higher_is_better
                else (value <= criteria.min_value)
            )
            word = "at least" if criteria.higher_is_better else "at most"
            results.append(
                Criterion(
                    "min_value",
                    ok,
                    f"{metric} must be {word} {criteria.min_value}",
                    value,
                    threshold=criteria.min_value,
                )
            )
        results.append(_improvement(criteria, value, champion_version, champion))
    if criteria.max_latency_ms is not None:
        latency = challenger.get(criteria.latency_metric)
        if latency is None:
            results.append(
                Criterion(
                    "max_latency",
                    False,
                    f"challenger has no {criteria.latency_metric!r} to check against "
                    f"{criteria.max_latency_ms} ms",
                    threshold=criteria.max_latency_ms,
                )
            )
        else:
            results.append(
                Criterion(
                    "max_latency",
                    latency <= criteria.max_latency_ms,
                    f"{criteria.latency_metric} must be at most {criteria.max_latency_ms}",
                    latency,
                    threshold=criteria.max_latency_ms,
                )
            )
    return Decision(
        passed=all(c.passed for c in results),
        criteria=results,
        champion_version=champion_version,
        challenger_version=challenger_version,
        metric=metric,
    )


def _improvement(
    criteria: AutoPromotion,
    value: float,
    champion_version: int | None,
    champion: dict[str, float] | None,
) -> Criterion:
    required = criteria.min_improvement
    if champion_version is None:
        return Criterion("improvement", True, "no champion yet: nothing to beat", value)
    base = (champion or {}).get(criteria.metric)
    if base is None:
        return Criterion(
            "improvement",
            True,
            f"champion version {champion_version} has no {criteria.metric!r}: nothing to beat",
            value,
        )
    gain = value - base if criteria.higher_is_better else base - value
    if base == 0:
        # A relative gain over zero is undefined: any strict gain counts.
        return Criterion(
            "improvement",
            gain > 0,
            "champion's value is 0: the challenger must simply be better",
            value,
            base,
            threshold=required,
            improvement=None,
        )
    relative = gain / abs(base)
    return Criterion(
        "improvement",
        relative >= required,
        f"needs {required:.1%} over the champion, has {relative:.1%}",
        value,
        base,
        threshold=required,
        improvement=round(relative, 6),
    )
