"""Schemas of version references and drift reports."""

from __future__ import annotations

import marshmallow as ma

from registry_service.api import Integer, Schema
from registry_service.monitoring.resources.figures.schemas import WindowArgsSchema
from registry_service.resources.common import MetricValue


class DriftArgsSchema(WindowArgsSchema):
    version = Integer(
        load_default=None,
        validate=ma.validate.Range(min=1),
        metadata={"description": "One version (default: every version served in the window)"},
    )


class ReferenceInSchema(Schema):
    example = {
        "records": [{"age": 41, "plan": "pro"}, {"age": 29, "plan": "free"}],
        "predictions": [1, 0],
    }

    records = ma.fields.List(
        ma.fields.Dict(keys=ma.fields.String()),
        required=True,
        validate=ma.validate.Length(min=1, max=100_000),
        metadata={"description": "A sample of the training data, one object per row"},
    )
    predictions = ma.fields.List(
        ma.fields.Raw(allow_none=True),
        load_default=None,
        allow_none=True,
        metadata={"description": "The model's predictions on those rows (prediction drift)"},
    )

    @ma.validates_schema
    def aligned(self, data, **_):
        predictions = data.get("predictions")
        if predictions is not None and len(predictions) != len(data["records"]):
            raise ma.ValidationError("one prediction per record", "predictions")


class ReferenceArgsSchema(Schema):
    prediction_column = ma.fields.String(
        load_default=None,
        validate=ma.validate.Length(min=1, max=256),
        metadata={"description": "CSV only: the column holding predictions, not a feature"},
    )


class ReferenceSchema(Schema):
    model_name = ma.fields.String()
    version = Integer()
    source = ma.fields.String(
        metadata={"description": "upload, or run-profile (logged with the training run)"}
    )
    created_at = ma.fields.AwareDateTime()
    created_by = ma.fields.String()
    profile = ma.fields.Dict(
        metadata={"description": "Per feature: quantiles (numeric) or shares (categorical)"}
    )


class FeatureDriftSchema(Schema):
    kind = ma.fields.String(metadata={"enum": ["numeric", "categorical"]})
    count = Integer(metadata={"description": "Sampled values compared"})
    psi = MetricValue()
    psi_threshold = MetricValue()
    psi_exceeded = ma.fields.Boolean()
    test = ma.fields.String(metadata={"enum": ["ks", "chi-square"]})
    statistic = MetricValue()
    p_value = MetricValue()
    p_value_threshold = MetricValue()
    significant = ma.fields.Boolean()
    drifted = ma.fields.Boolean(
        metadata={"description": "PSI exceeded and the test significant: material, not chance"}
    )


class VerdictSchema(Schema):
    drift = ma.fields.Boolean()
    drifted_features = ma.fields.List(ma.fields.String())
    compared = Integer()


class VersionDriftSchema(Schema):
    version = Integer()
    sampled_rows = Integer()
    reference = ma.fields.Dict(allow_none=True)
    features = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Nested(FeatureDriftSchema))
    prediction = ma.fields.Nested(FeatureDriftSchema, allow_none=True)
    missing_features = ma.fields.List(ma.fields.String())
    unexpected_features = ma.fields.List(ma.fields.String())
    verdict = ma.fields.Nested(VerdictSchema, allow_none=True)
    detail = ma.fields.String()


class DriftSchema(Schema):
    model_name = ma.fields.String()
    since = ma.fields.AwareDateTime()
    until = ma.fields.AwareDateTime()
    thresholds = ma.fields.Dict(metadata={"description": "From the model's monitoring policy"})
    versions = ma.fields.List(ma.fields.Nested(VersionDriftSchema))
