"""Schemas of the models resource."""

from __future__ import annotations

import marshmallow as ma
from webargs.fields import DelimitedList

from registry_service.api import Integer, Schema
from registry_service.domain.entities import Stage, VersionDetail
from registry_service.domain.names import MODEL_NAME_RULE
from registry_service.resources.common import (
    ComparedMetricSchema,
    ComparedParamSchema,
    PageArgsSchema,
    description_field,
    metrics_field,
    tag_patch_field,
    tags_field,
)
from registry_service.resources.runs.schemas import DatasetSchema, RunSchema

STAGES = [s.value for s in Stage]


class ModelSchema(Schema):
    name = ma.fields.String()
    description = ma.fields.String()
    tags = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.String())
    aliases = ma.fields.Dict(
        keys=ma.fields.String(),
        values=Integer(),
        metadata={"description": "Alias to version number"},
    )
    latest_versions = ma.fields.Dict(
        keys=ma.fields.String(),
        values=Integer(),
        metadata={"description": "Stage to its latest version"},
    )
    created_at = ma.fields.AwareDateTime()
    updated_at = ma.fields.AwareDateTime()


class ModelCreateSchema(Schema):
    example = {
        "name": "churn",
        "description": "Monthly churn classifier",
        "tags": {"team": "growth"},
    }

    name = ma.fields.String(required=True, metadata={"description": MODEL_NAME_RULE})
    description = description_field(load_default=None)
    tags = tags_field(load_default=dict)


class ModelPatchSchema(Schema):
    example = {
        "description": "Monthly churn classifier",
        "tags": {"owner": "ml-growth", "obsolete": None},
    }

    description = description_field(load_default=None)
    tags = tag_patch_field(load_default=dict)


class ModelListArgsSchema(PageArgsSchema):
    name_prefix = ma.fields.String(
        load_default=None, metadata={"description": "Only models whose name starts so"}
    )


class ModelPageSchema(Schema):
    models = ma.fields.List(ma.fields.Nested(ModelSchema))
    next_page_token = ma.fields.String(allow_none=True)


class VersionSchema(Schema):
    name = ma.fields.String()
    version = Integer()
    stage = ma.fields.String(metadata={"enum": STAGES})
    status = ma.fields.String()
    source = ma.fields.String()
    run_id = ma.fields.String(allow_none=True)
    model_id = ma.fields.String(allow_none=True)
    description = ma.fields.String()
    tags = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.String())
    aliases = ma.fields.List(ma.fields.String())
    user_id = ma.fields.String(allow_none=True)
    created_at = ma.fields.AwareDateTime()
    updated_at = ma.fields.AwareDateTime()


class LineageSchema(Schema):
    run_id = ma.fields.String(allow_none=True)
    experiment_id = ma.fields.String(allow_none=True)
    experiment_name = ma.fields.String(allow_none=True)
    git_commit = ma.fields.String(allow_none=True)
    source_name = ma.fields.String(allow_none=True)
    data_version = ma.fields.String(allow_none=True)
    datasets = ma.fields.List(ma.fields.Nested(DatasetSchema))
    params = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.String())
    metrics = metrics_field()
    registered_by = ma.fields.String(allow_none=True)
    registered_at = ma.fields.AwareDateTime(allow_none=True)
    recorded = ma.fields.Boolean(
        metadata={
            "description": "True when captured at registration; false when rebuilt from the run "
            "for a version registered outside this service"
        }
    )


class VersionArgsSchema(Schema):
    include = DelimitedList(
        ma.fields.String(validate=ma.validate.OneOf(["run"])),
        load_default=list,
        metadata={
            "description": "run: also fetch the source run as it is now (one more MLflow "
            "read). Without it, the lineage gives the run's params and metrics as they "
            "were at registration"
        },
    )


class VersionDetailSchema(VersionSchema):
    run = ma.fields.Nested(
        RunSchema,
        allow_none=True,
        metadata={
            "description": "The source run as it is now: with include=run, or when the "
            "version was registered outside the service (its lineage is rebuilt from it)"
        },
    )
    lineage = ma.fields.Nested(LineageSchema, allow_none=True)

    @ma.pre_dump
    def flatten(self, detail: VersionDetail, **_):
        mv = detail.version
        fields = {name: getattr(mv, name) for name in VersionSchema._declared_fields}
        return {**fields, "run": detail.run, "lineage": detail.lineage}


class VersionListArgsSchema(PageArgsSchema):
    stage = ma.fields.String(load_default=None, validate=ma.validate.OneOf(STAGES))


class VersionPageSchema(Schema):
    versions = ma.fields.List(ma.fields.Nested(VersionSchema))
    next_page_token = ma.fields.String(allow_none=True)


class VersionCreateSchema(Schema):
    example = {
        "run_id": "0f3c2a9e1b7d4c55a6e8f9d0b1c2d3e4",
        "artifact_path": "model",
        "description": "Retrained on October data",
        "tags": {"data_version": "2026-10"},
    }

    run_id = ma.fields.String(required=True, metadata={"description": "MLflow run id"})
    artifact_path = ma.fields.String(
        load_default="model",
        metadata={"description": "Name of the logged model, or artifact folder, in the run"},
    )
    description = description_field(load_default=None)
    tags = tags_field(load_default=dict)


class VersionPatchSchema(Schema):
    example = {"description": "Validated on the holdout set", "tags": {"validated": "true"}}

    description = description_field(load_default=None)
    tags = tag_patch_field(load_default=dict)


class CompareArgsSchema(Schema):
    versions = DelimitedList(
        Integer(validate=ma.validate.Range(min=1)),
        required=True,
        metadata={"description": "e.g. 3,5"},
    )


class ComparisonSchema(Schema):
    model_name = ma.fields.String()
    versions = ma.fields.List(ma.fields.Nested(VersionDetailSchema))
    metrics = ma.fields.List(ma.fields.Nested(ComparedMetricSchema))
    params = ma.fields.List(ma.fields.Nested(ComparedParamSchema))
