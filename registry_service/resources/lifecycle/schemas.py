"""Schemas of the lifecycle resource."""

from __future__ import annotations

import marshmallow as ma

from registry_service.api import Integer, Schema
from registry_service.resources.promotions.schemas import COMMENT_MAX, PromotionDetailSchema


class TargetArgsSchema(Schema):
    target_stage = ma.fields.String(load_default=None)
    target_alias = ma.fields.String(load_default=None)

    @ma.validates_schema
    def at_most_one_target(self, data, **_):
        if data.get("target_stage") and data.get("target_alias"):
            raise ma.ValidationError("give at most one of target_stage or target_alias", "_schema")


class HistoryArgsSchema(TargetArgsSchema):
    at = ma.fields.AwareDateTime(
        load_default=None,
        metadata={"description": "Who held what at this instant (ISO 8601 with offset)"},
    )


class TenureSchema(Schema):
    target_type = ma.fields.String(metadata={"enum": ["stage", "alias"]})
    target = ma.fields.String(attribute="target_name")
    version = Integer()
    since = ma.fields.AwareDateTime()
    until = ma.fields.AwareDateTime(allow_none=True, metadata={"description": "null: still"})
    started_by = ma.fields.String()
    ended_by = ma.fields.String(allow_none=True)
    promotion_request = Integer(allow_none=True)
    started_seq = Integer(metadata={"description": "Audit event that started it"})
    ended_seq = Integer(allow_none=True)


class HistorySchema(Schema):
    model_name = ma.fields.String()
    at = ma.fields.AwareDateTime(allow_none=True)
    holders_at = ma.fields.Dict(
        keys=ma.fields.String(),
        values=ma.fields.List(Integer()),
        metadata={"description": "Target to the versions holding it at `at` (or now)"},
    )
    tenures = ma.fields.List(
        ma.fields.Nested(TenureSchema), metadata={"description": "Newest first"}
    )


class RollbackSchema(Schema):
    example = {
        "target_stage": "Production",
        "reason": "p95 latency doubled after the last promotion",
    }

    target_stage = ma.fields.String()
    target_alias = ma.fields.String()
    reason = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=COMMENT_MAX))

    @ma.validates_schema
    def one_target(self, data, **_):
        if ("target_stage" in data) == ("target_alias" in data):
            raise ma.ValidationError("give exactly one of target_stage or target_alias", "_schema")


class ArchiveOldSchema(Schema):
    example = {"keep_latest": 5}

    keep_latest = Integer(
        required=True,
        validate=ma.validate.Range(min=1, max=10_000),
        metadata={"description": "How many of the newest versions to keep as they are"},
    )


class RetentionSchema(Schema):
    model_name = ma.fields.String()
    kept = ma.fields.List(Integer())
    archived = ma.fields.List(Integer())
    spared = ma.fields.Dict(
        keys=ma.fields.String(),
        values=ma.fields.String(),
        metadata={"description": "Older versions left alone, with why"},
    )


class EvaluateSchema(Schema):
    example = {"dry_run": True}

    dry_run = ma.fields.Boolean(
        load_default=False, metadata={"description": "Decide only; open no request"}
    )


class CriterionSchema(Schema):
    name = ma.fields.String(
        metadata={"enum": ["metric_present", "min_value", "improvement", "max_latency"]}
    )
    passed = ma.fields.Boolean()
    detail = ma.fields.String()
    challenger = ma.fields.Float(allow_none=True)
    champion = ma.fields.Float(allow_none=True)
    threshold = ma.fields.Float(allow_none=True)
    improvement = ma.fields.Float(allow_none=True, metadata={"description": "Relative, 0.05 = 5%"})


class DecisionSchema(Schema):
    passed = ma.fields.Boolean()
    dry_run = ma.fields.Boolean()
    metric = ma.fields.String()
    challenger_version = Integer()
    champion_version = Integer(allow_none=True)
    criteria = ma.fields.List(ma.fields.Nested(CriterionSchema))
    evidence = ma.fields.Dict(
        metadata={
            "description": "Per side (challenger, champion): version, metrics_state "
            "(frozen: the metrics recorded at registration, which the criteria used; "
            "unfrozen: registered outside the registry, so its run's metrics now) and "
            "changed_since_registration ([{key, registered, current}]; null when the run "
            "could not be read)"
        }
    )
    notes = ma.fields.List(
        ma.fields.String(), metadata={"description": "What to know about the evidence"}
    )
    request = ma.fields.Nested(
        PromotionDetailSchema,
        allow_none=True,
        metadata={"description": "The promotion request opened when it passed (not dry-run)"},
    )
