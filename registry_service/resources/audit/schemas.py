"""Schemas of the audit resource."""

from __future__ import annotations

import marshmallow as ma

from registry_service.api import Integer, Schema
from registry_service.resources.common import PageArgsSchema


class AuditArgsSchema(PageArgsSchema):
    model = ma.fields.String(load_default=None, metadata={"description": "Model name"})
    version = Integer(load_default=None, validate=ma.validate.Range(min=1))
    actor = ma.fields.String(load_default=None)
    action = ma.fields.String(load_default=None, metadata={"description": "e.g. model.created"})
    subject = ma.fields.String(
        load_default=None, metadata={"description": "e.g. promotion:12 or policy:<model>"}
    )
    since = ma.fields.AwareDateTime(
        load_default=None, metadata={"description": "Inclusive, ISO 8601 with offset"}
    )
    until = ma.fields.AwareDateTime(
        load_default=None, metadata={"description": "Exclusive, ISO 8601 with offset"}
    )

    @ma.validates_schema
    def check_range(self, data, **_):
        if data.get("since") and data.get("until") and data["since"] >= data["until"]:
            raise ma.ValidationError("must be later than since", "until")


class AuditEventSchema(Schema):
    seq = Integer()
    occurred_at = ma.fields.AwareDateTime()
    actor = ma.fields.String()
    action = ma.fields.String()
    model_name = ma.fields.String(allow_none=True)
    model_version = Integer(allow_none=True)
    request_id = ma.fields.String(allow_none=True)
    subject = ma.fields.String(allow_none=True)
    before = ma.fields.Raw(allow_none=True)
    after = ma.fields.Raw(allow_none=True)
    prev_hash = ma.fields.String()
    hash = ma.fields.String()


class AuditPageSchema(Schema):
    events = ma.fields.List(ma.fields.Nested(AuditEventSchema))
    next_page_token = ma.fields.String(allow_none=True)


class AuditHeadSchema(Schema):
    seq = Integer(metadata={"description": "Sequence number of the latest event"})
    hash = ma.fields.String(metadata={"description": "Its chain hash"})


class AuditVerifyArgsSchema(Schema):
    after_seq = Integer(
        load_default=0,
        validate=ma.validate.Range(min=0),
        metadata={"description": "Start after this checkpoint (a previously exported head)"},
    )
    after_hash = ma.fields.String(
        load_default=None,
        validate=ma.validate.Regexp(r"^[0-9a-f]{64}$"),
        metadata={"description": "The checkpoint's hash, as exported"},
    )

    @ma.validates_schema
    def both_or_neither(self, data, **_):
        if bool(data.get("after_seq")) != bool(data.get("after_hash")):
            raise ma.ValidationError("give after_seq and after_hash together", "after_hash")


class AuditVerificationSchema(Schema):
    ok = ma.fields.Boolean(metadata={"description": "True when every hash and link checks out"})
    from_seq = Integer(metadata={"description": "Checkpoint the walk started after"})
    events_checked = Integer()
    head_seq = Integer()
    head_hash = ma.fields.String()
    first_broken_seq = Integer(
        allow_none=True, metadata={"description": "The first event that fails, if any"}
    )
    problem = ma.fields.String(allow_none=True)
    seconds = ma.fields.Float(metadata={"description": "Time the walk took"})


class VerificationStartSchema(AuditVerifyArgsSchema):
    example = {"after_seq": 0}


class VerificationJobSchema(Schema):
    id = Integer()
    status = ma.fields.String(metadata={"enum": ["running", "done", "failed", "interrupted"]})
    requested_by = ma.fields.String()
    after_seq = Integer()
    head_seq = Integer(metadata={"description": "The head when the job started"})
    events_to_check = Integer()
    started_at = ma.fields.AwareDateTime()
    finished_at = ma.fields.AwareDateTime(allow_none=True)
    elapsed_seconds = ma.fields.Float()
    result = ma.fields.Nested(
        AuditVerificationSchema,
        allow_none=True,
        metadata={"description": "Once done: what GET /audit/verify would have answered"},
    )
    error = ma.fields.String(allow_none=True, metadata={"description": "Why a job failed"})
