"""Schemas of reconciliation: on demand, and on MLflow's own webhooks."""

from __future__ import annotations

import marshmallow as ma

from registry_service.api import Integer, Schema


class ReconcileArgsSchema(Schema):
    model_name = ma.fields.String(
        load_default=None,
        validate=ma.validate.Length(min=1, max=128),
        metadata={"description": "One model (default: every model in MLflow)"},
    )


class ChangeSchema(Schema):
    target = ma.fields.String(metadata={"description": "stage:Production or alias:champion"})
    expected = ma.fields.List(Integer(), metadata={"description": "Holders our records give"})
    found = ma.fields.List(Integer(), metadata={"description": "Holders MLflow reports"})


class ReconciliationSchema(Schema):
    model_name = ma.fields.String()
    outcome = ma.fields.String(
        metadata={
            "enum": ["in-step", "out-of-band", "reverted", "revert-failed", "adopted", "deferred"],
            "description": "deferred: one of our own moves was in flight; the next pass "
            "compares it",
        }
    )
    changes = ma.fields.List(ma.fields.Nested(ChangeSchema))
    audit_seq = Integer(allow_none=True)
    alert_id = Integer(allow_none=True)
    error = ma.fields.String(allow_none=True)


class ReconcileResultSchema(Schema):
    models = ma.fields.List(ma.fields.Nested(ReconciliationSchema))
    counts = ma.fields.Dict(keys=ma.fields.String(), values=Integer())


class MlflowWebhookAnswerSchema(Schema):
    received = ma.fields.String(metadata={"description": "entity.action of the event"})
    reconciliation = ma.fields.Nested(ReconciliationSchema, allow_none=True)
