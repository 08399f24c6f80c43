"""Schemas of a model's live figures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import marshmallow as ma

from registry_service.api import Integer, Schema
from registry_service.resources.common import MetricValue, Moment, Span


class WindowArgsSchema(Schema):
    since = Moment(
        load_default=lambda: datetime.now(UTC) - timedelta(hours=1),
        metadata={"description": "Start: ISO 8601 with a zone, or a span ago (1h, 7d); default 1h"},
    )
    until = Moment(
        load_default=lambda: datetime.now(UTC),
        metadata={"description": "End, as since (default now)"},
    )


class FiguresArgsSchema(WindowArgsSchema):
    version = Integer(load_default=None, validate=ma.validate.Range(min=1))
    variant = ma.fields.String(load_default=None, validate=ma.validate.Length(min=1, max=64))
    interval = Span(
        load_default=None,
        metadata={"description": "A time series with one point per interval (1m, 15m, 1h)"},
    )


def _numbers(**kwargs) -> ma.fields.Dict:
    return ma.fields.Dict(keys=ma.fields.String(), values=MetricValue(allow_none=True), **kwargs)


class PredictionFiguresSchema(Schema):
    rows = Integer()
    mean = MetricValue(allow_none=True)
    std = MetricValue(allow_none=True)
    min = MetricValue(allow_none=True)
    max = MetricValue(allow_none=True)
    quantiles = _numbers(metadata={"description": "p05, p25, p50, p75, p95 of the values"})
    classes = _numbers(
        allow_none=True, metadata={"description": "Share of each predicted class (classifiers)"}
    )
    histogram = ma.fields.Dict(
        metadata={"description": "edges (n+1) and counts (n) of equal-width bins"}
    )


class FeedbackFiguresSchema(Schema):
    requests = Integer(metadata={"description": "Predictions with ground truth"})
    labelled_rows = Integer(metadata={"description": "Rows compared as classes"})
    regression_rows = Integer(metadata={"description": "Rows compared as numbers"})
    accuracy = MetricValue()
    precision = MetricValue(metadata={"description": "Macro-averaged over classes"})
    recall = MetricValue(metadata={"description": "Macro-averaged over classes"})
    f1 = MetricValue(metadata={"description": "Macro-averaged over classes"})
    classes = Integer()
    mae = MetricValue()
    rmse = MetricValue()


class FiguresSchema(Schema):
    requests = Integer()
    ok = Integer()
    invalid = Integer(metadata={"description": "Refused input (422)"})
    errors = Integer(metadata={"description": "No version could answer"})
    fallbacks = Integer()
    throughput_per_minute = MetricValue(allow_none=True)
    error_rate = MetricValue(allow_none=True)
    invalid_rate = MetricValue(allow_none=True)
    fallback_rate = MetricValue(allow_none=True)
    latency_ms = _numbers(metadata={"description": "p50, p95, p99, mean, max of answered calls"})
    predictions = ma.fields.Nested(PredictionFiguresSchema)
    feedback = ma.fields.Nested(FeedbackFiguresSchema)


class PointSchema(FiguresSchema):
    start = ma.fields.AwareDateTime()


class GroupSchema(FiguresSchema):
    version = Integer(allow_none=True)
    variant = ma.fields.String(allow_none=True, metadata={"description": "Deployment variant"})
    series = ma.fields.List(ma.fields.Nested(PointSchema))


class MonitoringSchema(Schema):
    model_name = ma.fields.String()
    since = ma.fields.AwareDateTime()
    until = ma.fields.AwareDateTime()
    interval_seconds = Integer(allow_none=True)
    groups = ma.fields.List(
        ma.fields.Nested(GroupSchema),
        metadata={"description": "One per version and variant that answered in the window"},
    )
