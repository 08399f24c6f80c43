"""Schemas of A/B tests."""

from __future__ import annotations

import marshmallow as ma

from registry_service.api import Integer, Schema
from registry_service.domain.policy import Target
from registry_service.monitoring.service import AB_METRICS


class TargetSchema(Schema):
    target_stage = ma.fields.String(metadata={"description": "Staging or Production"})
    target_alias = ma.fields.String(metadata={"description": "e.g. challenger"})

    @ma.validates_schema
    def one_target(self, data, **_):
        if ("target_stage" in data) == ("target_alias" in data):
            raise ma.ValidationError("give exactly one of target_stage or target_alias", "_schema")

    @ma.post_load
    def to_target(self, data, **_) -> Target:
        if "target_stage" in data:
            return Target.stage(data["target_stage"])
        return Target.alias(data["target_alias"])


class AbTestInSchema(Schema):
    example = {
        "champion": {"target_stage": "Production"},
        "challenger": {"target_alias": "challenger"},
        "challenger_share": 20,
        "metric": "accuracy",
        "min_samples": 500,
        "alpha": 0.05,
        "max_hours": 72,
        "sticky_by": "header:X-Subject-Id",
    }

    champion = ma.fields.Nested(TargetSchema, required=True)
    challenger = ma.fields.Nested(TargetSchema, required=True)
    challenger_share = Integer(
        load_default=50,
        validate=ma.validate.Range(min=1, max=99),
        metadata={"description": "Percent of traffic to the challenger"},
    )
    metric = ma.fields.String(
        load_default="accuracy",
        validate=ma.validate.OneOf(list(AB_METRICS)),
        metadata={
            "description": "accuracy (from feedback, higher wins), error_rate (lower), mae "
            "(from feedback, lower), latency_ms (lower)"
        },
    )
    min_samples = Integer(
        load_default=100,
        validate=ma.validate.Range(min=2, max=100_000_000),
        metadata={"description": "Per side, before any winner is named"},
    )
    alpha = ma.fields.Float(load_default=0.05, validate=ma.validate.Range(min=0.0001, max=0.5))
    max_hours = ma.fields.Float(
        load_default=None,
        allow_none=True,
        validate=ma.validate.Range(min=0.01, max=24 * 90),
        metadata={"description": "Concluded by the sweep after this long"},
    )
    sticky_by = ma.fields.String(
        load_default=None,
        allow_none=True,
        metadata={"description": "As in the deployment (default: the deployment's own)"},
    )


class ConcludeSchema(Schema):
    example = {"reason": "two weeks of traffic, both sides past the minimum"}

    reason = ma.fields.String(
        load_default=None, allow_none=True, validate=ma.validate.Length(max=2000)
    )


class AbTestSchema(Schema):
    id = Integer()
    model_name = ma.fields.String()
    status = ma.fields.String(metadata={"enum": ["running", "concluded"]})
    champion = ma.fields.Dict(metadata={"description": "target and version at the start"})
    challenger = ma.fields.Dict(metadata={"description": "target and version at the start"})
    challenger_share = Integer()
    metric = ma.fields.String()
    min_samples = Integer()
    alpha = ma.fields.Float()
    max_hours = ma.fields.Float(allow_none=True)
    started_at = ma.fields.AwareDateTime()
    started_by = ma.fields.String()
    ended_at = ma.fields.AwareDateTime(allow_none=True)
    ended_by = ma.fields.String(allow_none=True)
    result = ma.fields.Dict(
        allow_none=True,
        metadata={
            "description": "Per side samples, metric with its 95% interval, latency and error "
            "rate; the test, its p-value and the decision (challenger-better, champion-better, "
            "no-difference, need-more-samples)"
        },
    )
    promotion_request_id = Integer(allow_none=True)
