"""Model policies: read, replace (admin, audited) and the eligible-approver count."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from registry_service.db.base import utcnow
from registry_service.db.database import Database
from registry_service.db.models import ApiTokenRow, ModelPolicyRow, PrincipalRow
from registry_service.domain.entities import Principal
from registry_service.domain.evaluation import AutoPromotion
from registry_service.domain.monitoring import MonitoringPolicy, validate_monitoring
from registry_service.domain.names import check_model_name
from registry_service.domain.policy import (
    OUT_OF_BAND_DEFAULT,
    OUT_OF_BAND_MODES,
    Policy,
    PolicyRule,
    validate_feedback_principals,
    validate_rules,
)
from registry_service.errors import ValidationError
from registry_service.gateway.base import RegistryGateway
from registry_service.services.audit import AuditLog
from registry_service.services.context import Context


def _policy(name: str, row: ModelPolicyRow | None) -> Policy:
    if row is None:
        return Policy(model_name=name)
    return Policy(
        model_name=name,
        rules=tuple(PolicyRule.from_dict(r) for r in row.rules),
        revision=row.revision,
        updated_at=row.updated_at,
        updated_by=row.updated_by,
        auto_promotion=AutoPromotion.from_dict(row.auto_promotion) if row.auto_promotion else None,
        monitoring=MonitoringPolicy.from_dict(row.monitoring) if row.monitoring else None,
        feedback_principals=tuple(row.feedback_principals or ()),
        out_of_band=row.out_of_band or OUT_OF_BAND_DEFAULT,
        allow_unsafe_artifacts=bool(row.allow_unsafe_artifacts),
    )


def _snapshot(policy: Policy) -> dict:
    return {
        "revision": policy.revision,
        "rules": [r.as_dict() for r in policy.rules],
        "auto_promotion": policy.auto_promotion.as_dict() if policy.auto_promotion else None,
        "monitoring": policy.monitoring.as_dict() if policy.monitoring else None,
        "feedback_principals": list(policy.feedback_principals),
        "out_of_band": policy.out_of_band,
        "allow_unsafe_artifacts": policy.allow_unsafe_artifacts,
    }


def active_principals(session: Session) -> list[Principal]:
    """Principals that can log in now (an unrevoked, unexpired token), once per kind of
    token they hold."""
    now = utcnow()
    rows = session.execute(
        select(PrincipalRow, ApiTokenRow.kind)
        .join(ApiTokenRow, ApiTokenRow.principal_id == PrincipalRow.id)
        .where(
            ApiTokenRow.revoked_at.is_(None),
            or_(ApiTokenRow.expires_at.is_(None), ApiTokenRow.expires_at > now),
        )
    ).all()
    return list(
        {
            (r.id, kind): Principal(
                r.id, r.name, frozenset(r.roles), frozenset(r.groups or ()), kind
            )
            for r, kind in rows
        }.values()
    )


def eligible_approvers(
    session: Session, rule: PolicyRule, requester: str | None = None
) -> list[str]:
    """Who could approve under ``rule``; without self-approval, never the requester."""
    return sorted(
        {
            p.name
            for p in active_principals(session)
            if rule.eligibility(p) is None
            and not (requester is not None and p.name == requester and not rule.allow_self_approval)
        }
    )


class PolicyService:
    def __init__(self, gateway: RegistryGateway, db: Database, audit: AuditLog) -> None:
        self.gateway = gateway
        self.db = db
        self.audit = audit

    def get(self, name: str) -> Policy:
        check_model_name(name)
        self.gateway.get_registered_model(name)
        return self.stored(name)

    def stored(self, name: str) -> Policy:
        """The policy as recorded, for callers that already checked the model exists."""
        with self.db.read() as session:
            return self.load(session, name)

    def load(self, session: Session, name: str) -> Policy:
        return _policy(name, session.get(ModelPolicyRow, name))

    def replace(
        self,
        ctx: Context,
        name: str,
        rules: list[PolicyRule],
        auto_promotion: AutoPromotion | None = None,
        monitoring: MonitoringPolicy | None = None,
        out_of_band: str = OUT_OF_BAND_DEFAULT,
        feedback_principals: list[str] | tuple[str, ...] = (),
        allow_unsafe_artifacts: bool = False,
    ) -> Policy:
        """Replace the model's own rules (an empty list falls back to the defaults), its
        auto-promotion criteria (None: no automatic promotion), its monitoring (None:
        default drift thresholds, no alert rules) and whether versions with dangerous
        pickle findings may still be requested for Production or an alias."""
        check_model_name(name)
        feedback_principals = validate_feedback_principals(list(feedback_principals))
        if out_of_band not in OUT_OF_BAND_MODES:
            raise ValidationError(
                f"out_of_band must be one of {list(OUT_OF_BAND_MODES)}",
                errors=[
                    {
                        "field": "out_of_band",
                        "location": "json",
                        "message": "guard, record or revert",
                    }
                ],
            )
        rules = validate_rules(rules)
        if monitoring is not None:
            monitoring = validate_monitoring(monitoring)
        if auto_promotion is not None:
            destination = auto_promotion.destination
            rule = Policy(name, tuple(rules)).rule_for(destination)
            if destination.name == "Production" and rule.required_approvals == 0:
                raise ValidationError(
                    "auto-promotion to Production needs a Production rule with approvals",
                    errors=[
                        {
                            "field": "auto_promotion.target_stage",
                            "location": "json",
                            "message": "Production always waits for approvers",
                        }
                    ],
                )
        self.gateway.get_registered_model(name)
        with self.db.transaction() as session:
            self.audit.lock_chain(session)  # the one lock order: chain, policy, alert
            self._check_quorums(session, rules)
            row = session.get(ModelPolicyRow, name, with_for_update=True)
            before = _policy(name, row)
            if row is None:
                row = ModelPolicyRow(model_name=name, revision=0, updated_by=ctx.actor)
                session.add(row)
            row.rules = [r.as_dict() for r in rules]
            row.auto_promotion = auto_promotion.as_dict() if auto_promotion else None
            row.monitoring = monitoring.as_dict() if monitoring else None
            row.out_of_band = out_of_band
            row.allow_unsafe_artifacts = allow_unsafe_artifacts
            row.feedback_principals = list(feedback_principals)
            row.revision += 1
            row.updated_at = utcnow()
            row.updated_by = ctx.actor
            session.flush()
            after = _policy(name, row)
            self.audit.append(
                session,
                ctx,
                "policy.updated",
                model_name=name,
                subject=f"policy:{name}",
                before=_snapshot(before),
                after=_snapshot(after),
            )
            return after

    def _check_quorums(self, session: Session, rules: list[PolicyRule]) -> None:
        for i, rule in enumerate(rules):
            eligible = eligible_approvers(session, rule)
            if rule.required_approvals > len(eligible):
                message = (
                    f"requires {rule.required_approvals} approvals but only {len(eligible)} "
                    f"principals can approve ({', '.join(eligible) or 'none'})"
                )
                raise ValidationError(
                    f"the rule for {rule.target_type.value} {rule.target!r} {message}",
                    errors=[
                        {
                            "field": f"rules.{i}.required_approvals",
                            "location": "json",
                            "message": message,
                        }
                    ],
                )
