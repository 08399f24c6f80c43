"""Schemas of the scheduler's jobs."""

from __future__ import annotations

import marshmallow as ma

from registry_service.api import Schema


class JobSchema(Schema):
    name = ma.fields.String()
    description = ma.fields.String()
    every_seconds = ma.fields.Float()
    leader = ma.fields.String(
        allow_none=True, metadata={"description": "host:pid of the process that ran it last"}
    )
    last_started_at = ma.fields.AwareDateTime(allow_none=True)
    last_finished_at = ma.fields.AwareDateTime(allow_none=True)
    last_duration_ms = ma.fields.Float(allow_none=True)
    last_outcome = ma.fields.String(allow_none=True, metadata={"enum": ["ok", "failed"]})
    last_result = ma.fields.Dict(allow_none=True, metadata={"description": "What it did"})
    last_error = ma.fields.String(allow_none=True)
    runs = ma.fields.Integer()
    failures = ma.fields.Integer()
    next_due_at = ma.fields.AwareDateTime(allow_none=True)


class JobsSchema(Schema):
    leader_here = ma.fields.Boolean(
        metadata={"description": "Whether the process that answered leads now"}
    )
    jobs = ma.fields.List(ma.fields.Nested(JobSchema))
