"""Schemas of what one serving process holds."""

from __future__ import annotations

import marshmallow as ma

from registry_service.api import Integer, Schema


class LoadedModelSchema(Schema):
    model_name = ma.fields.String()
    version = Integer()
    size_bytes = ma.fields.Integer(metadata={"description": "Artifacts on disk"})
    load_ms = ma.fields.Float()
    loaded_at = ma.fields.AwareDateTime()
    hits = ma.fields.Integer()
    integrity = ma.fields.String(
        metadata={
            "description": "verified: its files matched the manifest recorded at "
            "registration; unverified: none was recorded (registered before manifests "
            "were kept)",
            "enum": ["verified", "unverified"],
        }
    )


class RouteVariantSchema(Schema):
    name = ma.fields.String()
    target = ma.fields.String()
    weight = Integer()
    version = Integer(allow_none=True)
    fallback_version = Integer(allow_none=True)


class RouteSchema(Schema):
    model_name = ma.fields.String()
    variants = ma.fields.List(ma.fields.Nested(RouteVariantSchema))


class PredictionLogStatsSchema(Schema):
    written = ma.fields.Integer()
    dropped = ma.fields.Integer(metadata={"description": "Queue full: not recorded"})
    failed = ma.fields.Integer(metadata={"description": "Database refused the batch"})


class WatcherSchema(Schema):
    alive = ma.fields.Boolean(metadata={"description": "Following moves made anywhere"})
    seen_generation = ma.fields.Integer(allow_none=True)
    polls = ma.fields.Integer()
    last_error = ma.fields.String(allow_none=True)


class ServingStatusSchema(Schema):
    process = ma.fields.Integer(metadata={"description": "Process id that answered"})
    models = ma.fields.List(ma.fields.Nested(LoadedModelSchema))
    routes = ma.fields.List(ma.fields.Nested(RouteSchema))
    fallbacks = ma.fields.Integer()
    swaps = ma.fields.Integer()
    evictions = ma.fields.Integer()
    prediction_log = ma.fields.Nested(PredictionLogStatsSchema)
    watcher = ma.fields.Nested(WatcherSchema)
