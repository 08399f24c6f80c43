"""Schemas of the experiments resource."""

from __future__ import annotations

import marshmallow as ma

from registry_service.api import Schema
from registry_service.resources.common import PageArgsSchema
from registry_service.resources.runs.schemas import RunSchema
from registry_service.services.experiments import FILTER_MAX, METRIC_NAME_RULE, VIEWS

FILTER_HELP = (
    "MLflow search syntax, clauses joined by AND, e.g. "
    "\"metrics.auc > 0.8 AND params.depth = '4' AND tags.team = 'risk'\""
)
ORDERS = ("asc", "desc")


class ExperimentSchema(Schema):
    experiment_id = ma.fields.String()
    name = ma.fields.String()
    artifact_location = ma.fields.String(allow_none=True)
    lifecycle_stage = ma.fields.String(metadata={"enum": ["active", "deleted"]})
    tags = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.String())
    created_at = ma.fields.AwareDateTime(allow_none=True)
    updated_at = ma.fields.AwareDateTime(allow_none=True)


class ExperimentListArgsSchema(PageArgsSchema):
    name_prefix = ma.fields.String(
        load_default=None,
        validate=ma.validate.Length(max=500),
        metadata={"description": "Only experiments whose name starts so"},
    )
    name = ma.fields.String(
        load_default=None,
        validate=ma.validate.Length(min=1, max=500),
        metadata={"description": "Only the experiment with exactly this name (any characters)"},
    )
    view = ma.fields.String(load_default="active", validate=ma.validate.OneOf(VIEWS))


class ExperimentPageSchema(Schema):
    experiments = ma.fields.List(ma.fields.Nested(ExperimentSchema))
    next_page_token = ma.fields.String(allow_none=True)


def _filter_field() -> ma.fields.String:
    return ma.fields.String(
        load_default=None,
        validate=ma.validate.Length(max=FILTER_MAX),
        metadata={"description": FILTER_HELP},
    )


def _order_field(default: str, description: str) -> ma.fields.String:
    return ma.fields.String(
        load_default=default,
        validate=ma.validate.OneOf(ORDERS),
        metadata={"description": description},
    )


class RunListArgsSchema(PageArgsSchema):
    filter = _filter_field()
    order_by = ma.fields.String(
        load_default=None,
        metadata={
            "description": f"Metric to order by ({METRIC_NAME_RULE}); runs without it come "
            "last. Default: newest first"
        },
    )
    order = _order_field("desc", "Direction of order_by")


class RunPageSchema(Schema):
    runs = ma.fields.List(ma.fields.Nested(RunSchema))
    next_page_token = ma.fields.String(allow_none=True)


class BestRunArgsSchema(Schema):
    metric = ma.fields.String(required=True, metadata={"description": METRIC_NAME_RULE})
    order = _order_field("desc", "desc: higher is better; asc: lower is better")
    filter = _filter_field()
    include_unfinished = ma.fields.Boolean(
        load_default=False,
        metadata={"description": "Also consider running, failed and killed runs"},
    )
