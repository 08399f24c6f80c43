"""Champion/challenger evaluation: decide by the model's criteria, audit, maybe request.

Both sides are judged on the metrics recorded when they were registered, not on their
runs as they are now (services/review.py); a run changed since is reported in the
decision's ``evidence`` and ``notes``.
"""

from __future__ import annotations

from dataclasses import asdict, replace

from registry_service.domain.entities import Principal, Stage
from registry_service.domain.evaluation import Decision, decide
from registry_service.domain.names import check_model_name
from registry_service.errors import Conflict, IllegalTransition
from registry_service.gateway.base import RegistryGateway
from registry_service.services.audit import AuditLog
from registry_service.services.context import Context
from registry_service.services.models import ModelService
from registry_service.services.policies import PolicyService
from registry_service.services.promotions import PromotionService
from registry_service.services.review import evidence_notes, evidence_of


class EvaluationService:
    def __init__(
        self,
        gateway: RegistryGateway,
        audit: AuditLog,
        policies: PolicyService,
        models: ModelService,
        promotions: PromotionService,
    ) -> None:
        self.gateway = gateway
        self.audit = audit
        self.policies = policies
        self.models = models
        self.promotions = promotions

    def evaluate(
        self, ctx: Context, principal: Principal, name: str, version: int, dry_run: bool
    ) -> Decision:
        check_model_name(name)
        model = self.gateway.get_registered_model(name)
        criteria = self.policies.stored(name).auto_promotion
        if criteria is None:
            raise Conflict(
                f"model {name!r} has no auto-promotion criteria; set auto_promotion in "
                f"PUT /api/v1/models/{name}/policy"
            )
        challenger = self.models.get_version(name, version)
        champion_version = (
            model.aliases.get(criteria.champion_alias)
            if criteria.champion_alias
            else model.latest_versions.get(Stage.PRODUCTION.value)
        )
        if champion_version == version:
            raise IllegalTransition(f"version {version} is the champion it would be compared to")
        challenger_evidence = evidence_of(challenger)
        champion_evidence = (
            evidence_of(self.models.get_version(name, champion_version))
            if champion_version is not None
            else None
        )
        champion = dict(champion_evidence.metrics) if champion_evidence else None
        challenger_metrics = dict(challenger_evidence.metrics)
        decision = decide(criteria, version, challenger_metrics, champion_version, champion)
        evidence = {
            "challenger": {"version": version, **challenger_evidence.as_dict()},
            "champion": {"version": champion_version, **champion_evidence.as_dict()}
            if champion_evidence
            else None,
        }
        notes = evidence_notes("challenger", version, challenger_evidence)
        if champion_evidence is not None:
            notes += evidence_notes("champion", champion_version, champion_evidence)
        self.audit.record(
            ctx,
            "model.evaluated",
            model_name=name,
            model_version=version,
            before={
                "criteria": criteria.as_dict(),
                "champion_version": champion_version,
                "champion_metrics": champion,
                "challenger_metrics": challenger_metrics,
                "evidence": evidence,
            },
            after={
                "passed": decision.passed,
                "dry_run": dry_run,
                "criteria": [asdict(c) for c in decision.criteria],
            },
        )
        request = None
        if decision.passed and not dry_run:
            value = next(c.challenger for c in decision.criteria if c.name == "metric_present")
            request = self.promotions.create(
                ctx,
                principal,
                name,
                version,
                criteria.destination,
                f"auto-promotion: {criteria.metric} {value} passed every criterion against "
                + (f"version {champion_version}" if champion_version else "no champion"),
                evidence={"auto_promotion": {"evidence": evidence, "notes": notes}},
            )
        return replace(decision, request=request, dry_run=dry_run, evidence=evidence, notes=notes)
