"""Schema pieces shared by several resources."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

import marshmallow as ma

from registry_service.api import Integer, Schema
from registry_service.domain.names import TAG_VALUE_MAX

MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 50


def tags_field(**kwargs) -> ma.fields.Dict:
    return ma.fields.Dict(
        keys=ma.fields.String(),
        values=ma.fields.String(validate=ma.validate.Length(max=TAG_VALUE_MAX)),
        **kwargs,
    )


def tag_patch_field(**kwargs) -> ma.fields.Dict:
    return ma.fields.Dict(
        keys=ma.fields.String(),
        values=ma.fields.String(allow_none=True, validate=ma.validate.Length(max=TAG_VALUE_MAX)),
        metadata={"description": "Merge patch: a string sets the tag, null deletes it"},
        **kwargs,
    )


def description_field(**kwargs) -> ma.fields.String:
    return ma.fields.String(validate=ma.validate.Length(max=5000), **kwargs)


class PageArgsSchema(Schema):
    max_results = Integer(
        load_default=DEFAULT_PAGE_SIZE,
        validate=ma.validate.Range(min=1, max=MAX_PAGE_SIZE),
        metadata={"description": f"Page size, 1-{MAX_PAGE_SIZE}"},
    )
    page_token = ma.fields.String(
        load_default=None,
        validate=ma.validate.Length(max=4096),
        metadata={"description": "next_page_token from the previous page"},
    )


class MetricValue(ma.fields.Float):
    """A metric; NaN and infinities, which JSON cannot carry, are sent as null."""

    def _serialize(self, value, attr, obj, **kwargs):
        if value is None or not math.isfinite(value):
            return None
        return float(value)


def metrics_field(**kwargs) -> ma.fields.Dict:
    return ma.fields.Dict(keys=ma.fields.String(), values=MetricValue(allow_none=True), **kwargs)


class ComparedParamSchema(Schema):
    key = ma.fields.String()
    values = ma.fields.Dict(
        keys=ma.fields.String(),
        values=ma.fields.String(allow_none=True),
        metadata={"description": "Column (version or run id) to value; null where missing"},
    )
    differs = ma.fields.Boolean()


class ComparedMetricSchema(Schema):
    key = ma.fields.String()
    values = metrics_field(
        metadata={"description": "Column (version or run id) to value; null where missing"}
    )
    differs = ma.fields.Boolean()
    delta_from_first = ma.fields.Dict(
        keys=ma.fields.String(),
        values=MetricValue(allow_none=True),
        allow_none=True,
        metadata={"description": "Each value minus the first column's; null if it has none"},
    )


_SPAN = re.compile(r"^(\d{1,6})([smhd])$")
_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
MAX_SPAN = timedelta(days=400)


def parse_span(text: str) -> timedelta:
    """'90s', '15m', '1h', '7d' as a timedelta; ValueError otherwise."""
    match = _SPAN.match(text.strip())
    if not match:
        raise ValueError("a span such as 90s, 15m, 1h or 7d")
    span = timedelta(**{_UNIT[match.group(2)]: int(match.group(1))})
    if not timedelta(0) < span <= MAX_SPAN:
        raise ValueError("above 0 and at most 400 days")
    return span


class Span(ma.fields.Field):
    """A duration written as 90s, 15m, 1h or 7d."""

    def _deserialize(self, value, attr, data, **kwargs):
        try:
            return parse_span(str(value))
        except ValueError as exc:
            raise ma.ValidationError(str(exc)) from None


class Moment(ma.fields.Field):
    """A time: ISO 8601 with a zone, 'now', or a span ago ('1h' is an hour ago)."""

    def _deserialize(self, value, attr, data, **kwargs):
        text = str(value).strip()
        now = datetime.now(UTC)
        if text == "now":
            return now
        try:
            return now - parse_span(text)
        except ValueError:
            pass
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ma.ValidationError(
                "an ISO 8601 time with a zone, 'now', or a span ago such as 1h"
            ) from None
        if moment.tzinfo is None:
            raise ma.ValidationError("give the time zone, e.g. 2026-11-23T10:00:00Z")
        if not 1970 < moment.year < 9000:
            raise ma.ValidationError("a time between the years 1970 and 9000")
        return moment.astimezone(UTC)
