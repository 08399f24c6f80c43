"""Schemas of the policy resource."""

from __future__ import annotations

import marshmallow as ma

from registry_service.api import Integer, Schema
from registry_service.domain.entities import TokenKind
from registry_service.domain.evaluation import DEFAULT_IMPROVEMENT, AutoPromotion
from registry_service.domain.monitoring import ALERT_METRICS, AlertRule, MonitoringPolicy
from registry_service.domain.names import TAG_KEY_RE
from registry_service.domain.policy import (
    ANY_ALIAS,
    DEFAULT_APPROVER_KINDS,
    DEFAULT_EXPIRY_HOURS,
    DEPLOYMENT_RULE_TARGETS,
    MAX_APPROVALS,
    OUT_OF_BAND_DEFAULT,
    OUT_OF_BAND_MODES,
    PolicyRule,
    TargetType,
)

RULE_TARGETS = {
    "target_stage": TargetType.STAGE,
    "target_alias": TargetType.ALIAS,
    "target_deployment": TargetType.DEPLOYMENT,
}


class RuleSchema(Schema):
    target_stage = ma.fields.String(
        metadata={"description": "Staging, Production or Archived (or give target_alias)"}
    )
    target_alias = ma.fields.String(
        metadata={"description": f"An alias such as champion; '{ANY_ALIAS}' covers every alias"}
    )
    target_deployment = ma.fields.String(
        validate=ma.validate.OneOf(DEPLOYMENT_RULE_TARGETS),
        metadata={
            "description": "A rule for deployment changes: traffic (every change of which "
            "targets get traffic, in place of the strictest rule of Production and the "
            "targets whose share changes) or reweight (the same targets stay live, only "
            "weights or sticky_by change); at least 1 approval"
        },
    )
    required_approvals = Integer(
        required=True,
        validate=ma.validate.Range(min=0, max=MAX_APPROVALS),
        metadata={"description": "Distinct approvals needed; 0 executes when requested"},
    )
    approver_role = ma.fields.String(
        load_default="approver", validate=ma.validate.OneOf(["approver", "admin"])
    )
    approvers = ma.fields.List(
        ma.fields.String(),
        load_default=list,
        metadata={"description": "Only these principals may approve (empty: anyone with the role)"},
    )
    approver_group = ma.fields.String(
        load_default=None,
        allow_none=True,
        metadata={"description": "Members of this group may approve (with the role)"},
    )
    allow_self_approval = ma.fields.Boolean(load_default=False)
    expires_after_hours = Integer(
        load_default=DEFAULT_EXPIRY_HOURS, validate=ma.validate.Range(min=1, max=24 * 365)
    )
    rollback_approvals = Integer(
        load_default=1,
        validate=ma.validate.Range(min=1, max=MAX_APPROVALS),
        metadata={"description": "Approvals a rollback of this target needs (any approver)"},
    )
    break_glass = ma.fields.Boolean(
        load_default=False,
        metadata={"description": "Rollbacks execute at once and are flagged for review"},
    )

    approver_kinds = ma.fields.List(
        ma.fields.String(validate=ma.validate.OneOf([k.value for k in TokenKind])),
        load_default=lambda: list(DEFAULT_APPROVER_KINDS),
        validate=ma.validate.Length(min=1),
        metadata={
            "description": "Kinds of token whose approvals count (human, ci, agent); "
            "by default only human"
        },
    )

    @ma.validates_schema
    def one_target(self, data, **_):
        if sum(k in data for k in RULE_TARGETS) != 1:
            raise ma.ValidationError(
                "give exactly one of target_stage, target_alias or target_deployment", "_schema"
            )

    @ma.post_load
    def to_rule(self, data, **_) -> PolicyRule:
        field = next(k for k in RULE_TARGETS if k in data)
        return PolicyRule(
            target_type=RULE_TARGETS[field],
            target=data[field],
            required_approvals=data["required_approvals"],
            approver_role=data["approver_role"],
            approvers=tuple(data["approvers"]),
            approver_group=data["approver_group"],
            allow_self_approval=data["allow_self_approval"],
            expires_after_hours=data["expires_after_hours"],
            rollback_approvals=data["rollback_approvals"],
            break_glass=data["break_glass"],
            approver_kinds=tuple(data["approver_kinds"]),
            source="model",
        )


class RuleOutSchema(Schema):
    target_type = ma.fields.String(metadata={"enum": [t.value for t in TargetType]})
    target = ma.fields.String()
    required_approvals = Integer()
    approver_role = ma.fields.String()
    approvers = ma.fields.List(ma.fields.String())
    approver_group = ma.fields.String(allow_none=True)
    allow_self_approval = ma.fields.Boolean()
    expires_after_hours = Integer()
    rollback_approvals = Integer()
    break_glass = ma.fields.Boolean()
    approver_kinds = ma.fields.List(ma.fields.String())
    source = ma.fields.String(
        metadata={"description": "model: set for this model; default: the service default"}
    )


class AutoPromotionSchema(Schema):
    metric = ma.fields.String(
        required=True,
        validate=ma.validate.Regexp(TAG_KEY_RE),
        metadata={"description": "Run metric compared between challenger and champion"},
    )
    higher_is_better = ma.fields.Boolean(load_default=True)
    min_value = ma.fields.Float(load_default=None, allow_none=True)
    min_improvement = ma.fields.Float(
        load_default=DEFAULT_IMPROVEMENT,
        validate=ma.validate.Range(min=0, max=100),
        metadata={"description": "Relative gain over the champion, 0.05 = 5%"},
    )
    max_latency_ms = ma.fields.Float(
        load_default=None, allow_none=True, validate=ma.validate.Range(min=0)
    )
    latency_metric = ma.fields.String(
        load_default="latency_ms", validate=ma.validate.Regexp(TAG_KEY_RE)
    )
    target_stage = ma.fields.String(metadata={"description": "Default Staging"})
    target_alias = ma.fields.String()
    champion_alias = ma.fields.String(
        load_default=None,
        allow_none=True,
        metadata={"description": "The champion is this alias's holder (else Production's)"},
    )

    @ma.validates_schema
    def at_most_one_target(self, data, **_):
        if "target_stage" in data and "target_alias" in data:
            raise ma.ValidationError("give at most one of target_stage or target_alias", "_schema")

    @ma.post_load
    def to_criteria(self, data, **_) -> AutoPromotion:
        from registry_service.domain.names import check_alias
        from registry_service.domain.policy import Target

        if "target_alias" in data:
            target = Target.alias(data.pop("target_alias"))
        else:
            target = Target.stage(data.pop("target_stage", "Staging"))
        if data.get("champion_alias"):
            check_alias(data["champion_alias"], "auto_promotion.champion_alias")
        return AutoPromotion(**data, target_type=target.type, target=target.name)


class AutoPromotionOutSchema(Schema):
    metric = ma.fields.String()
    higher_is_better = ma.fields.Boolean()
    min_value = ma.fields.Float(allow_none=True)
    min_improvement = ma.fields.Float()
    max_latency_ms = ma.fields.Float(allow_none=True)
    latency_metric = ma.fields.String()
    target_type = ma.fields.String()
    target = ma.fields.String()
    champion_alias = ma.fields.String(allow_none=True)


class AlertRuleSchema(Schema):
    name = ma.fields.String(required=True, metadata={"description": "Unique in the policy"})
    metric = ma.fields.String(
        required=True,
        validate=ma.validate.OneOf(list(ALERT_METRICS)),
        metadata={
            "description": "latency_p95_ms, error_rate and fallback_rate fire above the "
            "threshold, accuracy below it, drift when the drift verdict says so"
        },
    )
    threshold = ma.fields.Float(load_default=None, allow_none=True)
    target_stage = ma.fields.String(metadata={"description": "Whose holder is watched"})
    target_alias = ma.fields.String()
    window_minutes = Integer(load_default=15, validate=ma.validate.Range(min=1, max=10080))
    min_samples = Integer(
        load_default=1,
        validate=ma.validate.Range(min=1),
        metadata={"description": "Requests (feedback rows for accuracy) before a verdict"},
    )
    rollback = ma.fields.Boolean(
        load_default=False,
        metadata={
            "description": "On firing, open a rollback request for the target (executed at "
            "once under the target rule's break_glass)"
        },
    )

    @ma.validates_schema
    def at_most_one_target(self, data, **_):
        if "target_stage" in data and "target_alias" in data:
            raise ma.ValidationError("give at most one of target_stage or target_alias", "_schema")

    @ma.post_load
    def to_rule(self, data, **_) -> AlertRule:
        if "target_alias" in data:
            kind, target = TargetType.ALIAS, data.pop("target_alias")
        else:
            kind, target = TargetType.STAGE, data.pop("target_stage", "Production")
        return AlertRule(**data, target_type=kind, target=target)


class AlertRuleOutSchema(Schema):
    name = ma.fields.String()
    metric = ma.fields.String()
    threshold = ma.fields.Float(allow_none=True)
    target_type = ma.fields.String()
    target = ma.fields.String()
    window_minutes = Integer()
    min_samples = Integer()
    rollback = ma.fields.Boolean()


class MonitoringPolicySchema(Schema):
    drift_psi = ma.fields.Float(
        load_default=0.2, metadata={"description": "PSI at or above which a feature drifted"}
    )
    drift_p_value = ma.fields.Float(
        load_default=0.01,
        metadata={"description": "The KS / chi-square p-value below which it is significant"},
    )
    alerts = ma.fields.List(ma.fields.Nested(AlertRuleSchema), load_default=list)

    @ma.post_load
    def to_policy(self, data, **_) -> MonitoringPolicy:
        return MonitoringPolicy(data["drift_psi"], data["drift_p_value"], tuple(data["alerts"]))


class MonitoringPolicyOutSchema(Schema):
    drift_psi = ma.fields.Float()
    drift_p_value = ma.fields.Float()
    alerts = ma.fields.List(ma.fields.Nested(AlertRuleOutSchema))


ALLOW_UNSAFE_HELP = (
    "Whether a version whose pickle scan found dangerous globals (os.system, eval, "
    "subprocess, code objects...) may still be requested for Production or an alias; "
    "false (default): such requests are refused with unsafe-artifact"
)


class PolicyPutSchema(Schema):
    example = {
        "rules": [
            {"target_stage": "Production", "required_approvals": 2, "approver_group": "ml-leads"},
            {"target_stage": "Staging", "required_approvals": 0},
        ],
        "auto_promotion": {"metric": "val_auc", "min_value": 0.8, "min_improvement": 0.05},
        "out_of_band": "revert",
        "monitoring": {
            "drift_psi": 0.2,
            "alerts": [
                {"name": "slow", "metric": "latency_p95_ms", "threshold": 250},
                {"name": "failing", "metric": "error_rate", "threshold": 0.05, "rollback": True},
            ],
        },
    }

    rules = ma.fields.List(
        ma.fields.Nested(RuleSchema),
        required=True,
        metadata={"description": "The model's own rules; an empty list reverts to the defaults"},
    )
    auto_promotion = ma.fields.Nested(
        AutoPromotionSchema,
        load_default=None,
        allow_none=True,
        metadata={"description": "Criteria for /evaluate; null: no automatic promotion"},
    )
    monitoring = ma.fields.Nested(
        MonitoringPolicySchema,
        load_default=None,
        allow_none=True,
        metadata={"description": "Drift thresholds and alert rules; null: defaults, no alerts"},
    )
    feedback_principals = ma.fields.List(
        ma.fields.String(validate=ma.validate.Length(min=1, max=128)),
        load_default=list,
        validate=ma.validate.Length(max=100),
        metadata={
            "description": "Principals who may send feedback on anyone's predictions of "
            "this model (the predicting principal and admins always may); empty by default"
        },
    )
    allow_unsafe_artifacts = ma.fields.Boolean(
        load_default=False, metadata={"description": ALLOW_UNSAFE_HELP}
    )
    out_of_band = ma.fields.String(
        load_default=OUT_OF_BAND_DEFAULT,
        validate=ma.validate.OneOf(OUT_OF_BAND_MODES),
        metadata={
            "description": "A stage or alias moved in MLflow behind the registry's back is "
            "always recorded (an audit event, an alert, webhooks) and never served; guard "
            "(default) also puts Production and every alias back, revert puts every "
            "target back, record leaves MLflow as it is"
        },
    )


FEEDBACK_PRINCIPALS_HELP = (
    "Principals who may send feedback on anyone's predictions of this model; the "
    "principal that made a prediction and admins always may"
)


class PolicySchema(Schema):
    model_name = ma.fields.String()
    source = ma.fields.String(metadata={"description": "model or default"})
    revision = Integer(metadata={"description": "0 while the defaults apply"})
    updated_at = ma.fields.AwareDateTime(allow_none=True)
    updated_by = ma.fields.String(allow_none=True)
    rules = ma.fields.List(
        ma.fields.Nested(RuleOutSchema),
        attribute="effective_rules",
        metadata={"description": "Every rule in force: the model's own, then the defaults"},
    )
    auto_promotion = ma.fields.Nested(AutoPromotionOutSchema, allow_none=True)
    monitoring = ma.fields.Nested(MonitoringPolicyOutSchema, allow_none=True)
    out_of_band = ma.fields.String(metadata={"enum": list(OUT_OF_BAND_MODES)})
    allow_unsafe_artifacts = ma.fields.Boolean(metadata={"description": ALLOW_UNSAFE_HELP})
    feedback_principals = ma.fields.List(
        ma.fields.String(), metadata={"description": FEEDBACK_PRINCIPALS_HELP}
    )
