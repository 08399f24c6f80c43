"""Schemas of the Open Inference Protocol (V2), as KServe, MLServer and Triton use it."""

from __future__ import annotations

import marshmallow as ma

from registry_service.api import Schema


class V2LiveSchema(Schema):
    live = ma.fields.Boolean()


class V2ReadySchema(Schema):
    ready = ma.fields.Boolean()


class V2ModelReadySchema(Schema):
    name = ma.fields.String()
    ready = ma.fields.Boolean()


class V2TensorSpecSchema(Schema):
    name = ma.fields.String()
    datatype = ma.fields.String()
    shape = ma.fields.List(ma.fields.Integer())


class V2ModelMetadataSchema(Schema):
    name = ma.fields.String()
    versions = ma.fields.List(ma.fields.String())
    platform = ma.fields.String()
    inputs = ma.fields.List(ma.fields.Nested(V2TensorSpecSchema))
    outputs = ma.fields.List(ma.fields.Nested(V2TensorSpecSchema))


class V2TensorSchema(Schema):
    class Meta:
        unknown = ma.INCLUDE

    name = ma.fields.String(required=True)
    shape = ma.fields.List(ma.fields.Integer(), required=True)
    datatype = ma.fields.String(required=True)
    data = ma.fields.Raw(required=True)
    parameters = ma.fields.Dict()


class V2InferRequestSchema(Schema):
    example = {
        "id": "42",
        "inputs": [
            {"name": "x1", "shape": [1], "datatype": "FP64", "data": [0.3]},
            {"name": "x2", "shape": [1], "datatype": "FP64", "data": [1.2]},
        ],
    }

    class Meta:
        unknown = ma.INCLUDE

    id = ma.fields.String()
    inputs = ma.fields.List(ma.fields.Nested(V2TensorSchema), required=True)
    outputs = ma.fields.List(ma.fields.Dict())
    parameters = ma.fields.Dict()


class V2InferResponseSchema(Schema):
    model_name = ma.fields.String()
    model_version = ma.fields.String()
    id = ma.fields.String()
    parameters = ma.fields.Dict()
    outputs = ma.fields.List(ma.fields.Nested(V2TensorSchema))
