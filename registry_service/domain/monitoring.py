"""A model's monitoring policy: drift thresholds and alert rules."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from registry_service.domain.policy import Target, TargetType
from registry_service.errors import ValidationError

# metric -> the direction that fires
ALERT_METRICS = {
    "latency_p95_ms": "above",
    "error_rate": "above",
    "fallback_rate": "above",
    "accuracy": "below",
    "drift": "detected",
}
MAX_RULES = 20
RULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


@dataclass(frozen=True)
class AlertRule:
    name: str
    metric: str
    threshold: float | None = None
    target_type: TargetType = TargetType.STAGE
    target: str = "Production"
    window_minutes: int = 15
    # Fewer requests (feedback rows for accuracy) in the window than this: no verdict.
    min_samples: int = 1
    rollback: bool = False

    @property
    def on(self) -> Target:
        return Target(self.target_type, self.target)

    def breached(self, value: float | bool) -> bool:
        direction = ALERT_METRICS[self.metric]
        if direction == "detected":
            return bool(value)
        assert self.threshold is not None
        return value > self.threshold if direction == "above" else value < self.threshold

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "metric": self.metric,
            "threshold": self.threshold,
            "target_type": self.target_type.value,
            "target": self.target,
            "window_minutes": self.window_minutes,
            "min_samples": self.min_samples,
            "rollback": self.rollback,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlertRule:
        return cls(
            name=data["name"],
            metric=data["metric"],
            threshold=data.get("threshold"),
            target_type=TargetType(data.get("target_type", "stage")),
            target=data.get("target", "Production"),
            window_minutes=int(data.get("window_minutes", 15)),
            min_samples=int(data.get("min_samples", 1)),
            rollback=bool(data.get("rollback", False)),
        )


@dataclass(frozen=True)
class MonitoringPolicy:
    drift_psi: float = 0.2
    drift_p_value: float = 0.01
    alerts: tuple[AlertRule, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return {
            "drift_psi": self.drift_psi,
            "drift_p_value": self.drift_p_value,
            "alerts": [r.as_dict() for r in self.alerts],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> MonitoringPolicy:
        if not data:
            return cls()
        return cls(
            drift_psi=float(data.get("drift_psi", 0.2)),
            drift_p_value=float(data.get("drift_p_value", 0.01)),
            alerts=tuple(AlertRule.from_dict(r) for r in data.get("alerts") or ()),
        )

    def rule(self, name: str) -> AlertRule | None:
        return next((r for r in self.alerts if r.name == name), None)


# The alert the reconciler raises for a stage or alias moved in MLflow behind our back;
# no policy rule may take its name.
OUT_OF_BAND_RULE = "out-of-band"
# The alert serving raises when a version's files do not match its signed manifest.
INTEGRITY_RULE = "artifact-integrity"
# Alerts raised by the service itself, not by a policy's rules.
SYSTEM_RULES = (OUT_OF_BAND_RULE, INTEGRITY_RULE)


def validate_monitoring(policy: MonitoringPolicy) -> MonitoringPolicy:
    def bad(where: str, message: str) -> ValidationError:
        where = f"monitoring.{where}"
        return ValidationError(
            f"{where}: {message}",
            errors=[{"field": where, "location": "json", "message": message}],
        )

    if not 0 < policy.drift_psi <= 10:
        raise bad("drift_psi", "above 0, at most 10")
    if not 0 < policy.drift_p_value < 1:
        raise bad("drift_p_value", "between 0 and 1")
    if len(policy.alerts) > MAX_RULES:
        raise bad("alerts", f"at most {MAX_RULES} rules")
    names: set[str] = set()
    rules = []
    for i, rule in enumerate(policy.alerts):
        at = f"alerts.{i}"
        if not RULE_NAME.match(rule.name):
            raise bad(f"{at}.name", "1-64 letters, digits, '_', '.', '-'")
        if rule.name in SYSTEM_RULES:
            raise bad(f"{at}.name", f"{rule.name!r} is the service's own alert")
        if rule.name in names:
            raise bad(f"{at}.name", f"{rule.name!r} appears twice")
        names.add(rule.name)
        if rule.metric not in ALERT_METRICS:
            raise bad(f"{at}.metric", "one of " + ", ".join(ALERT_METRICS))
        if rule.metric == "drift":
            rule = AlertRule(**{**rule.__dict__, "threshold": None})
        elif rule.threshold is None:
            raise bad(f"{at}.threshold", f"required for {rule.metric}")
        elif rule.metric in ("error_rate", "fallback_rate", "accuracy") and not (
            0 <= rule.threshold <= 1
        ):
            raise bad(f"{at}.threshold", "a fraction from 0 to 1")
        elif rule.metric == "latency_p95_ms" and not 0 < rule.threshold <= 3_600_000:
            raise bad(f"{at}.threshold", "milliseconds above 0")
        target = (
            Target.stage(rule.target)
            if rule.target_type is TargetType.STAGE
            else (Target.alias(rule.target))
        )
        if not 1 <= rule.window_minutes <= 7 * 24 * 60:
            raise bad(f"{at}.window_minutes", "1 minute to 7 days")
        if not 1 <= rule.min_samples <= 10**9:
            raise bad(f"{at}.min_samples", "at least 1")
        rules.append(AlertRule(**{**rule.__dict__, "target": target.name}))
    return MonitoringPolicy(policy.drift_psi, policy.drift_p_value, tuple(rules))
