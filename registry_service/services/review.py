"""Evidence frozen at registration, for the decisions and the people that weigh versions.

A version's metrics as evidence are those recorded when it was registered through the
registry (its lineage), not its run's as they are now: MLflow accepts new metrics on a
finished run, so a run can be made to look better after the fact. Where the run now shows
otherwise, both values are reported ("changed since registration"). A version registered
outside the registry has no record: its run's metrics are used and flagged ``unfrozen``.

Auto-promotion (services/evaluation.py) decides on this evidence, and the comparison of
``GET /promotions/{id}`` (and so the review page and the CLI) shows it.
"""

from __future__ import annotations

from typing import Any

from registry_service.domain.comparison import (
    UNFROZEN,
    ChampionComparison,
    Evidence,
    ReviewSide,
    compare_with_champion,
    frozen_evidence,
)
from registry_service.domain.entities import Lineage, VersionDetail
from registry_service.domain.promotion import Promotion
from registry_service.errors import RunNotFound, UpstreamError
from registry_service.services.audit import to_json_value
from registry_service.services.models import ModelService
from registry_service.services.policies import PolicyService


def evidence_of(detail: VersionDetail) -> Evidence:
    """A version read with its run (``ModelService.get_version``) as evidence."""
    current = dict(detail.run.metrics) if detail.run is not None else None
    if detail.lineage is not None and detail.lineage.recorded:
        return frozen_evidence(detail.lineage.metrics, current)
    return frozen_evidence(None, current)


def evidence_notes(role: str, version: int | None, evidence: Evidence) -> list[str]:
    """What a reader of a decision should know about one side's evidence."""
    if version is None:
        return []
    if evidence.state == UNFROZEN:
        return [
            f"{role} version {version} was registered outside the registry: its run's "
            "metrics as they are now are used (unfrozen)"
        ]
    changed = evidence.changed_since_registration
    if changed is None:
        return [
            f"{role} version {version}'s run could not be read: the metrics recorded at "
            "registration are used, unchecked against the run"
        ]
    return [
        f"{role} version {version}'s run changed since registration: {c.key} was "
        f"{_value(c.registered)} when registered and is {_value(c.current)} now; the "
        "registered value is used"
        for c in changed
    ]


def _value(value: float | None) -> str:
    return "absent" if value is None else f"{value:g}"


def _run_metrics_now(models: ModelService, run_id: str | None) -> dict[str, float] | None:
    """The run's metrics now; None when it is gone or MLflow does not answer (the
    record stands, unchecked)."""
    if not run_id:
        return None
    try:
        return dict(models.gateway.get_run(run_id).metrics)
    except (RunNotFound, UpstreamError):
        return None


def _lineage_summary(lineage: dict[str, Any], run_id: str | None) -> dict[str, Any]:
    """Where a version came from, as a reviewer reads it: no params or metrics here."""
    keys = (
        "experiment_id",
        "experiment_name",
        "git_commit",
        "source_name",
        "data_version",
        "registered_by",
        "registered_at",
    )
    return to_json_value(
        {"run_id": lineage.get("run_id") or run_id, **{k: lineage.get(k) for k in keys}}
    )


def _side(models: ModelService, version: int, lineage: Lineage) -> ReviewSide:
    if lineage.recorded:
        evidence = frozen_evidence(lineage.metrics, _run_metrics_now(models, lineage.run_id))
    else:  # rebuilt from the run just now
        evidence = frozen_evidence(None, lineage.metrics)
    summary = {
        **lineage.as_dict(),
        "registered_by": lineage.registered_by,
        "registered_at": lineage.registered_at,
    }
    return ReviewSide(
        version,
        evidence.metrics,
        lineage.params,
        _lineage_summary(summary, lineage.run_id),
        evidence.state,
        evidence.changed_since_registration,
    )


def request_comparison(
    models: ModelService, policies: PolicyService, p: Promotion
) -> ChampionComparison:
    """The request's candidate beside the version it would replace, each on the metrics
    recorded at registration."""
    recorded = models.lineage_of(p.model_name, p.version)
    if recorded is not None:
        candidate = _side(models, p.version, recorded)
    else:
        # The version is gone and was never recorded: the snapshot taken when the
        # request was opened, which is the run's of then.
        run = p.evidence.get("run") or {}
        snapshot = p.evidence.get("lineage") or {}
        candidate = ReviewSide(
            p.version,
            run.get("metrics") or snapshot.get("metrics") or {},
            run.get("params") or snapshot.get("params") or {},
            _lineage_summary(snapshot, run.get("run_id")),
            UNFROZEN,
            None,
        )
    champion = None
    if p.replaces_version is not None:
        found = models.lineage_of(p.model_name, p.replaces_version)
        if found is not None:
            champion = _side(models, p.replaces_version, found)
    criteria = policies.stored(p.model_name).auto_promotion
    primary = (criteria.metric, criteria.higher_is_better) if criteria else None
    return compare_with_champion(candidate, champion, primary)
