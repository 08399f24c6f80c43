"""Schemas of a model's deployment."""

from __future__ import annotations

import marshmallow as ma

from registry_service.api import Integer, Schema


class VariantSchema(Schema):
    name = ma.fields.String(required=True, metadata={"description": "e.g. champion"})
    target_stage = ma.fields.String(
        load_default=None, metadata={"description": "Staging or Production"}
    )
    target_alias = ma.fields.String(load_default=None, metadata={"description": "e.g. challenger"})
    weight = Integer(
        required=True,
        validate=ma.validate.Range(min=0, max=100),
        metadata={"description": "Share of traffic in percent; weights add up to 100"},
    )


class DeploymentInSchema(Schema):
    example = {
        "variants": [
            {"name": "champion", "target_stage": "Production", "weight": 90},
            {"name": "challenger", "target_alias": "challenger", "weight": 10},
        ],
        "sticky_by": "header:X-Subject-Id",
        "fallback": True,
        "preload": True,
        "reason": "10% of traffic to the challenger for a week",
    }

    variants = ma.fields.List(ma.fields.Nested(VariantSchema), required=True)
    sticky_by = ma.fields.String(
        load_default=None,
        allow_none=True,
        metadata={
            "description": "Where the subject key comes from, 'header:<Name>' or "
            "'body:<field>'; a subject always gets the same variant while weights stay"
        },
    )
    fallback = ma.fields.Boolean(
        load_default=True,
        metadata={"description": "Answer from the target's previous holder when it fails"},
    )
    preload = ma.fields.Boolean(
        load_default=False, metadata={"description": "Load at process start, before ready"}
    )
    reason = ma.fields.String(
        load_default=None,
        allow_none=True,
        validate=ma.validate.Length(min=1, max=5000),
        metadata={
            "description": "Why, when the change moves traffic and becomes a change "
            "request: shown to approvers (default: the split in words)"
        },
    )


class VariantOutSchema(VariantSchema):
    version = Integer(
        allow_none=True, metadata={"description": "The version that holds the target now"}
    )


class DeploymentSchema(Schema):
    model_name = ma.fields.String()
    variants = ma.fields.List(ma.fields.Nested(VariantOutSchema))
    sticky_by = ma.fields.String(allow_none=True)
    fallback = ma.fields.Boolean()
    preload = ma.fields.Boolean()
    revision = Integer(metadata={"description": "0 while the model has the default"})
    is_default = ma.fields.Boolean(
        metadata={"description": "True when no deployment was set: all to Production"}
    )
