"""Schemas of the promotions resource."""

from __future__ import annotations

import marshmallow as ma

from registry_service.api import Integer, Schema
from registry_service.domain.promotion import Status
from registry_service.resources.audit.schemas import AuditEventSchema
from registry_service.resources.common import MetricValue, PageArgsSchema
from registry_service.resources.policies.schemas import RuleOutSchema

STATUSES = [s.value for s in Status]
COMMENT_MAX = 5000


def comment_field(**kwargs) -> ma.fields.String:
    return ma.fields.String(validate=ma.validate.Length(min=1, max=COMMENT_MAX), **kwargs)


class PromotionCreateSchema(Schema):
    example = {
        "model_name": "churn",
        "version": 3,
        "target_stage": "Production",
        "reason": "AUC 0.91 vs 0.87 on the October holdout",
        "archive_existing_versions": True,
    }

    model_name = ma.fields.String(required=True)
    version = Integer(required=True, validate=ma.validate.Range(min=1))
    target_stage = ma.fields.String(metadata={"description": "Staging, Production or Archived"})
    target_alias = ma.fields.String(metadata={"description": "An alias such as champion"})
    reason = ma.fields.String(
        required=True,
        validate=ma.validate.Length(min=1, max=COMMENT_MAX),
        metadata={"description": "Why: shown to approvers and kept in the audit log"},
    )
    archive_existing_versions = ma.fields.Boolean(
        load_default=True,
        metadata={"description": "Archive the versions now in the target stage"},
    )

    @ma.validates_schema
    def one_target(self, data, **_):
        if ("target_stage" in data) == ("target_alias" in data):
            raise ma.ValidationError("give exactly one of target_stage or target_alias", "_schema")

    @ma.validates("reason")
    def not_blank(self, value, **_):
        if not value.strip():
            raise ma.ValidationError("must not be blank")


class ApproveSchema(Schema):
    example = {"comment": "Metrics and lineage checked"}

    comment = comment_field(load_default=None)


class RejectSchema(Schema):
    example = {"comment": "Trained on a stale data snapshot; retrain on 2026-10"}

    comment = comment_field(required=True, metadata={"description": "Why it is rejected"})


class CancelSchema(Schema):
    example = {"comment": "Superseded by a newer training run"}

    comment = comment_field(load_default=None)


class CommentCreateSchema(Schema):
    example = {"comment": "Is the latency measured on the same hardware?"}

    comment = comment_field(required=True)


class ApprovalSchema(Schema):
    approver = ma.fields.String()
    comment = ma.fields.String(allow_none=True)
    created_at = ma.fields.AwareDateTime()


class CommentSchema(Schema):
    author = ma.fields.String()
    kind = ma.fields.String(
        metadata={"enum": ["comment", "rejection", "cancellation", "superseded"]}
    )
    body = ma.fields.String()
    created_at = ma.fields.AwareDateTime()


class PromotionSchema(Schema):
    id = Integer()
    model_name = ma.fields.String()
    version = Integer()
    target_stage = ma.fields.String(allow_none=True)
    target_alias = ma.fields.String(allow_none=True)
    archive_existing_versions = ma.fields.Boolean(attribute="archive_existing")
    reason = ma.fields.String()
    requester = ma.fields.String()
    kind = ma.fields.String(
        metadata={
            "enum": ["promotion", "rollback", "deployment"],
            "description": "deployment: a change of which targets the model's traffic "
            "reaches (no target_stage or target_alias; version is the deployment revision "
            "it was requested against; evidence.deployment holds the spec before and after)",
        }
    )
    review_required = ma.fields.Boolean(
        metadata={"description": "A break-glass rollback executed without approval"}
    )
    status = ma.fields.String(metadata={"enum": STATUSES})
    required_approvals = Integer()
    received_approvals = Integer()
    approvals = ma.fields.List(ma.fields.Nested(ApprovalSchema))
    policy = ma.fields.Nested(
        RuleOutSchema,
        attribute="rule",
        metadata={"description": "The policy rule in force when the request was opened"},
    )
    replaces_version = Integer(
        allow_none=True,
        metadata={"description": "The version holding the target when requested (the champion)"},
    )
    evidence = ma.fields.Dict(
        metadata={
            "description": "Snapshot at request time: the version, its run's metrics, "
            "params, and lineage"
        }
    )
    created_at = ma.fields.AwareDateTime()
    updated_at = ma.fields.AwareDateTime(allow_none=True)
    expires_at = ma.fields.AwareDateTime()
    decided_at = ma.fields.AwareDateTime(allow_none=True)
    executed_at = ma.fields.AwareDateTime(allow_none=True)
    attempts = Integer(metadata={"description": "Executions started"})
    last_error = ma.fields.String(
        allow_none=True,
        metadata={
            "description": "Why the last execution failed, or, on an approved request, why "
            "its outcome is not known yet"
        },
    )
    outcome = ma.fields.Dict(
        allow_none=True,
        metadata={
            "description": "What the executed move changed: from_stage, to_stage, "
            "archived_versions (stages) or alias, previous_version (aliases), and "
            "replaced_version; reconciled or confirmed_after_error when MLflow's answer "
            "to the move was lost and the move was read back. A traffic change: "
            "deployment_revision written (0: removed), routing_change, ab_test_id"
        },
    )
    superseded_by = Integer(
        allow_none=True,
        metadata={"description": "The request whose move made this one stale (superseded)"},
    )
    comments = ma.fields.List(ma.fields.Nested(CommentSchema))


class MetricChangeSchema(Schema):
    key = ma.fields.String()
    registered = MetricValue(
        allow_none=True, metadata={"description": "Recorded at registration (null: absent)"}
    )
    current = MetricValue(allow_none=True, metadata={"description": "On the run now"})


class ReviewSideSchema(Schema):
    version = Integer()
    lineage = ma.fields.Dict(
        metadata={
            "description": "run_id, experiment, git_commit, data_version, source, "
            "registered_by and registered_at"
        }
    )
    metrics_state = ma.fields.String(
        metadata={
            "enum": ["frozen", "unfrozen"],
            "description": "frozen: the metrics compared are those recorded at "
            "registration; unfrozen: registered outside the registry, so its run's now",
        }
    )
    changed_since_registration = ma.fields.List(
        ma.fields.Nested(MetricChangeSchema),
        allow_none=True,
        metadata={
            "description": "Metrics the run shows differently from the registration "
            "record, with both values; null when the run could not be read"
        },
    )


class MetricVerdictSchema(Schema):
    key = ma.fields.String()
    candidate = MetricValue(allow_none=True)
    champion = MetricValue(allow_none=True)
    delta = MetricValue(allow_none=True, metadata={"description": "candidate - champion"})
    relative_delta = MetricValue(
        allow_none=True, metadata={"description": "delta / |champion|; 0.05 = 5%"}
    )
    higher_is_better = ma.fields.Boolean(
        allow_none=True,
        metadata={"description": "From the policy's auto-promotion metric, else the name"},
    )
    better = ma.fields.String(
        allow_none=True,
        metadata={
            "enum": ["candidate", "champion", "equal", None],
            "description": "Which side is better; null when either value is missing or "
            "the direction is unknown",
        },
    )


class ParamDifferenceSchema(Schema):
    key = ma.fields.String()
    candidate = ma.fields.String(allow_none=True)
    champion = ma.fields.String(allow_none=True)


class ChampionComparisonSchema(Schema):
    candidate = ma.fields.Nested(ReviewSideSchema)
    champion = ma.fields.Nested(
        ReviewSideSchema,
        allow_none=True,
        metadata={"description": "The version the candidate would replace; null if none"},
    )
    primary_metric = ma.fields.String(
        allow_none=True, metadata={"description": "The policy's auto-promotion metric"}
    )
    metrics = ma.fields.List(ma.fields.Nested(MetricVerdictSchema))
    params_differing = ma.fields.List(ma.fields.Nested(ParamDifferenceSchema))
    params_same = Integer(metadata={"description": "How many params are equal"})


class PromotionDetailSchema(PromotionSchema):
    audit_trail = ma.fields.List(ma.fields.Nested(AuditEventSchema))
    comparison = ma.fields.Nested(
        ChampionComparisonSchema,
        allow_none=True,
        metadata={
            "description": "The candidate (as snapshotted when requested) beside the "
            "champion it would replace; on GET of one request"
        },
    )


class PromotionListArgsSchema(PageArgsSchema):
    model = ma.fields.String(load_default=None)
    status = ma.fields.String(load_default=None, validate=ma.validate.OneOf(STATUSES))
    requester = ma.fields.String(load_default=None)
    actionable = ma.fields.Boolean(
        load_default=False,
        metadata={"description": "Only pending requests the caller may approve now"},
    )


class PromotionPageSchema(Schema):
    promotions = ma.fields.List(ma.fields.Nested(PromotionSchema))
    next_page_token = ma.fields.String(allow_none=True)
