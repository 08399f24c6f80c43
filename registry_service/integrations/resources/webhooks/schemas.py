"""Schemas of webhooks and their deliveries."""

from __future__ import annotations

import marshmallow as ma

from registry_service.api import Integer, Schema
from registry_service.integrations.outbox import DELIVERED, FAILED, PENDING
from registry_service.integrations.webhooks import FORMATS, MAX_PATTERNS
from registry_service.resources.common import PageArgsSchema


def url_field(**kwargs) -> ma.fields.String:
    return ma.fields.String(
        validate=ma.validate.Length(min=1, max=2048),
        metadata={"description": "Where deliveries are POSTed (http or https)"},
        **kwargs,
    )


def events_field(**kwargs) -> ma.fields.List:
    return ma.fields.List(
        ma.fields.String(validate=ma.validate.Length(min=1, max=64)),
        validate=ma.validate.Length(min=1, max=MAX_PATTERNS),
        metadata={
            "description": "Audit actions or patterns: promotion.requested, promotion.*, "
            "alert.*, model.out_of_band_change, * for all"
        },
        **kwargs,
    )


def format_field(**kwargs) -> ma.fields.String:
    return ma.fields.String(
        validate=ma.validate.OneOf(FORMATS),
        metadata={
            "description": "standard: a Standard Webhooks JSON envelope; slack: a message "
            "for a Slack incoming webhook. Both are signed"
        },
        **kwargs,
    )


def description_field(**kwargs) -> ma.fields.String:
    return ma.fields.String(allow_none=True, validate=ma.validate.Length(max=500), **kwargs)


class WebhookInSchema(Schema):
    example = {
        "url": "https://hooks.example.com/registry",
        "events": ["promotion.*", "alert.*", "model.out_of_band_change"],
        "format": "standard",
        "description": "release channel",
    }

    url = url_field(required=True)
    events = events_field(required=True)
    format = format_field(load_default="standard")
    secret = ma.fields.String(
        load_default=None,
        validate=ma.validate.Length(max=128),
        metadata={
            "description": "whsec_ and 24-64 base64 bytes; made up when left out. "
            "Shown in this answer only"
        },
    )
    description = description_field(load_default=None)


class WebhookPatchSchema(Schema):
    example = {"enabled": True, "events": ["promotion.requested"]}

    url = url_field()
    events = events_field()
    format = format_field()
    description = description_field()
    enabled = ma.fields.Boolean(
        metadata={"description": "false pauses deliveries; true resumes what is owed"}
    )


class WebhookSchema(Schema):
    id = Integer()
    url = ma.fields.String()
    events = ma.fields.List(ma.fields.String())
    format = ma.fields.String()
    description = ma.fields.String(allow_none=True)
    enabled = ma.fields.Boolean()
    disabled_reason = ma.fields.String(
        allow_none=True,
        metadata={"description": "Who or what disabled it: a day of failed deliveries disables"},
    )
    created_at = ma.fields.AwareDateTime()
    created_by = ma.fields.String()
    updated_at = ma.fields.AwareDateTime()
    last_success_at = ma.fields.AwareDateTime(allow_none=True)
    pending_deliveries = Integer()


class WebhookCreatedSchema(WebhookSchema):
    secret = ma.fields.String(
        metadata={"description": "Verifies the webhook-signature header; shown only once"}
    )


class WebhookListSchema(Schema):
    webhooks = ma.fields.List(ma.fields.Nested(WebhookSchema))


class DeliveryArgsSchema(PageArgsSchema):
    status = ma.fields.String(
        load_default=None, validate=ma.validate.OneOf([PENDING, DELIVERED, FAILED])
    )


class AttemptSchema(Schema):
    at = ma.fields.String()
    status_code = Integer(allow_none=True)
    error = ma.fields.String(allow_none=True)
    duration_ms = ma.fields.Float()


class DeliverySchema(Schema):
    id = Integer()
    webhook_id = Integer()
    event_seq = Integer(metadata={"description": "The audit event delivered"})
    event_type = ma.fields.String()
    message_id = ma.fields.String(metadata={"description": "The webhook-id header"})
    status = ma.fields.String(metadata={"enum": [PENDING, DELIVERED, FAILED]})
    attempts = Integer()
    created_at = ma.fields.AwareDateTime()
    next_attempt_at = ma.fields.AwareDateTime(allow_none=True)
    last_attempt_at = ma.fields.AwareDateTime(allow_none=True)
    delivered_at = ma.fields.AwareDateTime(allow_none=True)
    last_status_code = Integer(allow_none=True)
    last_error = ma.fields.String(allow_none=True)
    attempt_log = ma.fields.List(
        ma.fields.Nested(AttemptSchema), metadata={"description": "The latest attempts"}
    )


class DeliveryPageSchema(Schema):
    deliveries = ma.fields.List(ma.fields.Nested(DeliverySchema))
    next_page_token = ma.fields.String(allow_none=True)
