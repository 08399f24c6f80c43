"""Schemas of predictions and their feedback."""

from __future__ import annotations

import marshmallow as ma

from registry_service.api import Integer, Schema

FORMATS = "dataframe_split, dataframe_records, instances or inputs"


class PredictArgsSchema(Schema):
    version = Integer(
        load_default=None,
        validate=ma.validate.Range(min=1),
        metadata={"description": "Pin one version (no fallback)"},
    )
    stage = ma.fields.String(load_default=None, metadata={"description": "Pin a stage"})
    alias = ma.fields.String(load_default=None, metadata={"description": "Pin an alias"})

    @ma.validates_schema
    def one_pin(self, data, **_):
        pins = [k for k in ("version", "stage", "alias") if data.get(k) is not None]
        if len(pins) > 1:
            raise ma.ValidationError("pin at most one of version, stage, alias", pins[1])


class PredictRequestSchema(Schema):
    """MLflow's scoring body, as `mlflow models serve` takes it."""

    example = {"dataframe_split": {"columns": ["x1", "x2"], "data": [[0.3, 1.2]]}}

    class Meta:
        # Bodies carry the sticky subject field, and whatever else clients of MLflow's
        # scoring server send along; the model's signature judges the input.
        unknown = ma.INCLUDE

    dataframe_split = ma.fields.Raw(metadata={"description": "pandas 'split' orient"})
    dataframe_records = ma.fields.Raw(metadata={"description": "pandas 'records' orient"})
    instances = ma.fields.Raw(metadata={"description": "TF serving rows"})
    inputs = ma.fields.Raw(metadata={"description": "TF serving columns or tensor"})
    params = ma.fields.Dict(metadata={"description": "Inference parameters"})


class PredictResponseSchema(Schema):
    predictions = ma.fields.Raw()
    model_version = Integer()
    variant = ma.fields.String(allow_none=True)
    served_from = ma.fields.String(metadata={"description": "e.g. Production, @challenger"})
    fallback = ma.fields.Boolean(metadata={"description": "True when the previous holder answered"})
    request_id = ma.fields.String(
        metadata={"description": "Minted by the service; quote it when sending feedback"}
    )
    client_request_id = ma.fields.String(
        allow_none=True,
        metadata={"description": "The caller's X-Request-ID, kept with the prediction"},
    )


class FeedbackItemSchema(Schema):
    request_id = ma.fields.String(
        required=True,
        validate=ma.validate.Length(min=1, max=64),
        metadata={"description": "The request_id a prediction answered with (not the client's)"},
    )
    actual = ma.fields.Raw(
        required=True, allow_none=False, metadata={"description": "The true label or value"}
    )


class FeedbackSchema(Schema):
    example = {"items": [{"request_id": "5f0c9d6e2a4b4e0f8c1d", "actual": 1}]}

    items = ma.fields.List(
        ma.fields.Nested(FeedbackItemSchema),
        required=True,
        validate=ma.validate.Length(min=1, max=1000),
    )


class FeedbackResultSchema(Schema):
    accepted = Integer()
    unknown_request_ids = ma.fields.List(
        ma.fields.String(),
        metadata={"description": "Not (yet) in this model's prediction log; send again later"},
    )
