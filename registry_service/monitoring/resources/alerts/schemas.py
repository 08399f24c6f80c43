"""Schemas of alerts."""

from __future__ import annotations

import marshmallow as ma

from registry_service.api import Integer, Schema


class AlertArgsSchema(Schema):
    model_name = ma.fields.String(load_default=None, validate=ma.validate.Length(min=1, max=128))
    state = ma.fields.String(load_default=None, validate=ma.validate.OneOf(["firing", "resolved"]))
    max_results = Integer(load_default=200, validate=ma.validate.Range(min=1, max=1000))


class EvaluateArgsSchema(Schema):
    model_name = ma.fields.String(
        load_default=None,
        validate=ma.validate.Length(min=1, max=128),
        metadata={"description": "One model (default: every model with alert rules)"},
    )


class ResolveSchema(Schema):
    example = {"comment": "the alias move was a sanctioned hotfix; see INC-142"}

    comment = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=2000))


class AlertSchema(Schema):
    id = Integer()
    model_name = ma.fields.String()
    rule = ma.fields.String(metadata={"description": "The rule's name in the model's policy"})
    state = ma.fields.String(metadata={"enum": ["firing", "resolved"]})
    figures = ma.fields.Dict(
        metadata={"description": "version, metric, value, threshold, samples, window_minutes"}
    )
    fired_at = ma.fields.AwareDateTime()
    resolved_at = ma.fields.AwareDateTime(allow_none=True)
    resolved_figures = ma.fields.Dict(allow_none=True)
    rollback_request_id = Integer(allow_none=True)
