"""Schemas of the runs resource."""

from __future__ import annotations

import marshmallow as ma
from webargs.fields import DelimitedList

from registry_service.api import Schema
from registry_service.resources.common import (
    ComparedMetricSchema,
    ComparedParamSchema,
    metrics_field,
)


class DatasetSchema(Schema):
    name = ma.fields.String()
    digest = ma.fields.String(allow_none=True)
    source_type = ma.fields.String(allow_none=True)
    source = ma.fields.String(allow_none=True)
    context = ma.fields.String(allow_none=True)


class RunSchema(Schema):
    run_id = ma.fields.String()
    experiment_id = ma.fields.String()
    run_name = ma.fields.String(allow_none=True)
    parent_run_id = ma.fields.String(
        allow_none=True, metadata={"description": "Set on a nested (child) run"}
    )
    status = ma.fields.String(
        metadata={"enum": ["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"]}
    )
    user_id = ma.fields.String(allow_none=True)
    start_time = ma.fields.AwareDateTime(allow_none=True)
    end_time = ma.fields.AwareDateTime(allow_none=True)
    artifact_uri = ma.fields.String()
    params = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.String())
    metrics = metrics_field(
        metadata={"description": "Latest value of each metric (null if not finite)"}
    )
    tags = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.String())
    datasets = ma.fields.List(ma.fields.Nested(DatasetSchema))


class RunCompareArgsSchema(Schema):
    run_ids = DelimitedList(
        ma.fields.String(),
        required=True,
        metadata={"description": "2 to 10 run ids, comma-separated"},
    )
    metrics = DelimitedList(
        ma.fields.String(),
        load_default=list,
        metadata={"description": "Only these metrics, comma-separated (default: all)"},
    )


class RunComparisonSchema(Schema):
    runs = ma.fields.List(ma.fields.Nested(RunSchema))
    metrics = ma.fields.List(ma.fields.Nested(ComparedMetricSchema))
    params = ma.fields.List(ma.fields.Nested(ComparedParamSchema))
