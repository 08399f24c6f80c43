"""What the monitoring services return: our own entities, never ORM rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class AbTest:
    id: int
    model_name: str
    status: str  # running | concluded
    champion: dict[str, Any]  # {"target": "stage Production", "version": 3}
    challenger: dict[str, Any]
    challenger_share: int
    metric: str
    min_samples: int
    alpha: float
    max_hours: float | None
    started_at: datetime
    started_by: str
    ended_at: datetime | None
    ended_by: str | None
    result: dict[str, Any] | None  # the analysis: live while running, frozen at the end
    promotion_request_id: int | None


@dataclass(frozen=True)
class Alert:
    id: int
    model_name: str
    rule: str
    state: str  # firing | resolved
    figures: dict[str, Any]
    fired_at: datetime
    resolved_at: datetime | None
    resolved_figures: dict[str, Any] | None
    rollback_request_id: int | None


@dataclass(frozen=True)
class Reference:
    model_name: str
    version: int
    source: str
    created_at: datetime
    created_by: str
    profile: dict[str, Any]
