"""Tables owned by the service (MLflow keeps its own)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from registry_service.db.base import Base, BigInt, CanonicalJSON, UTCDateTime, utcnow


class PrincipalRow(Base):
    __tablename__ = "principals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    groups: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    tokens: Mapped[list[ApiTokenRow]] = relationship(back_populates="principal")


class ApiTokenRow(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    principal_id: Mapped[int] = mapped_column(ForeignKey("principals.id"), index=True)
    # SHA-256 of the secret: tokens are 256-bit random, so a slow hash buys nothing.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16), default="human", server_default="human")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(128))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    principal: Mapped[PrincipalRow] = relationship(
        back_populates="tokens", lazy="joined", innerjoin=True
    )


class AuditEventRow(Base):
    """One recorded change. Rows are only ever inserted; ``seq`` orders the hash chain."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_model_name_seq", "model_name", "seq"),
        Index("ix_audit_events_actor_seq", "actor", "seq"),
        Index("ix_audit_events_action_seq", "action", "seq"),
        Index("ix_audit_events_occurred_at", "occurred_at"),
        Index("ix_audit_events_subject_seq", "subject", "seq"),
        # Time-window filters: without these, a window deep in the past scans the
        # (action|model, seq) index backwards through everything newer.
        Index("ix_audit_events_action_occurred_at", "action", "occurred_at"),
        Index("ix_audit_events_model_name_occurred_at", "model_name", "occurred_at"),
    )

    seq: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=False)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    model_name: Mapped[str | None] = mapped_column(String(128))
    model_version: Mapped[int | None] = mapped_column(Integer)
    request_id: Mapped[str | None] = mapped_column(String(64))
    # What the event is about beyond the model, e.g. "promotion:12"; hashed when set.
    subject: Mapped[str | None] = mapped_column(String(64))
    before: Mapped[Any | None] = mapped_column(CanonicalJSON)
    after: Mapped[Any | None] = mapped_column(CanonicalJSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditChainHeadRow(Base):
    """Single row holding the chain's tip; locking it serializes appends."""

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInt, default=0)
    hash: Mapped[str] = mapped_column(String(64))
    # The seq of the last webhook.* event: appends re-read the webhooks table only
    # when it moved (every change to a webhook is such an event).
    webhooks_seq: Mapped[int] = mapped_column(BigInt, default=0, server_default="0")


class VersionLineageRow(Base):
    """Provenance captured at registration: runs can change or vanish later."""

    __tablename__ = "model_version_lineage"
    __table_args__ = (UniqueConstraint("model_name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_name: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[str | None] = mapped_column(String(64), index=True)
    experiment_id: Mapped[str | None] = mapped_column(String(64))
    experiment_name: Mapped[str | None] = mapped_column(String(512))
    git_commit: Mapped[str | None] = mapped_column(String(64))
    source_name: Mapped[str | None] = mapped_column(String(512))
    data_version: Mapped[str | None] = mapped_column(String(256))
    datasets: Mapped[list[dict]] = mapped_column(JSON, default=list)
    params: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    registered_by: Mapped[str | None] = mapped_column(String(128))
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The artifacts as registered (services/manifests.py): SHA-256 per file and one
    # digest over them, the signed bundle and its key, and the pickle scan's findings.
    # None on versions registered before manifests were kept.
    manifest_digest: Mapped[str | None] = mapped_column(String(64))
    manifest_files: Mapped[dict[str, str] | None] = mapped_column(JSON)
    manifest_signature: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    signing_key_id: Mapped[str | None] = mapped_column(String(64))
    scan_verdict: Mapped[str | None] = mapped_column(String(16))
    scan_findings: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class ModelPolicyRow(Base):
    """A model's own promotion rules; models without a row follow the service default."""

    __tablename__ = "model_policies"

    model_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    rules: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    auto_promotion: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    monitoring: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Whether versions whose pickle scan found dangerous globals may still be requested
    # for Production or an alias.
    allow_unsafe_artifacts: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    # record | revert; None (rows older than the reconciler) reads as record.
    out_of_band: Mapped[str | None] = mapped_column(String(16))
    # Principals who may send feedback on anyone's predictions of this model.
    feedback_principals: Mapped[list[str] | None] = mapped_column(JSON)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(128))


# Statuses in which a request still holds its (model, version, target) slot.
OPEN_STATUSES = ("pending", "approved")


class PromotionRequestRow(Base):
    __tablename__ = "promotion_requests"
    __table_args__ = (
        # At most one open request per (model, version, target), enforced by the database.
        Index(
            "uq_promotion_requests_open_target",
            "model_name",
            "version",
            "target_type",
            "target",
            unique=True,
            postgresql_where=text("status IN ('pending', 'approved')"),
            sqlite_where=text("status IN ('pending', 'approved')"),
        ),
        Index("ix_promotion_requests_model_name_id", "model_name", "id"),
        Index("ix_promotion_requests_status_id", "status", "id"),
        Index("ix_promotion_requests_requester_id", "requester", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_name: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    target_type: Mapped[str] = mapped_column(String(8))
    target: Mapped[str] = mapped_column(String(256))
    archive_existing: Mapped[bool] = mapped_column(Boolean, default=True)
    reason: Mapped[str] = mapped_column(Text)
    requester: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16), default="promotion")
    review_required: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16))
    rule: Mapped[dict[str, Any]] = mapped_column(JSON)
    replaces_version: Mapped[int | None] = mapped_column(Integer)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    executed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set, and committed, before MLflow is called: an execution that started.
    execution_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    superseded_by: Mapped[int | None] = mapped_column(Integer)


class PromotionApprovalRow(Base):
    __tablename__ = "promotion_approvals"
    __table_args__ = (UniqueConstraint("request_id", "approver"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("promotion_requests.id"))
    approver: Mapped[str] = mapped_column(String(128))
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PromotionCommentRow(Base):
    __tablename__ = "promotion_comments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("promotion_requests.id"), index=True)
    author: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IdempotencyKeyRow(Base):
    """The first response to a (principal, key), replayed to retries of the same call."""

    __tablename__ = "idempotency_keys"

    principal: Mapped[str] = mapped_column(String(128), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[Any | None] = mapped_column(JSON)
    # Indexed for the retention purge.
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class MlflowIntentRow(Base):
    """An MLflow write about to be made: committed before the call, settled after it.

    One left ``pending`` means the call's outcome is unknown (a timeout, a dropped
    connection); the sweep reads MLflow and records what actually happened.
    """

    __tablename__ = "mlflow_intents"
    __table_args__ = (Index("ix_mlflow_intents_status_created_at", "status", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    action: Mapped[str] = mapped_column(String(64))
    # model, version, or registration (a version whose number MLflow assigns)
    subject: Mapped[str] = mapped_column(String(16))
    model_name: Mapped[str] = mapped_column(String(128))
    version: Mapped[int | None] = mapped_column(Integer)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    actor: Mapped[str] = mapped_column(String(128))
    request_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditVerificationRow(Base):
    """A verification of the audit chain run in the background, polled by its id."""

    __tablename__ = "audit_verifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    requested_by: Mapped[str] = mapped_column(String(128))
    after_seq: Mapped[int] = mapped_column(BigInt, default=0)
    after_hash: Mapped[str | None] = mapped_column(String(64))
    head_seq: Mapped[int] = mapped_column(BigInt)
    status: Mapped[str] = mapped_column(String(16), default="running")
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Touched while the job runs: a stale one means its process died.
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ModelChangeRow(Base):
    """Per model, the audit sequence number of the last change to what it serves.

    Serving processes poll ``generation > last seen`` to follow moves made anywhere.
    """

    __tablename__ = "model_changes"

    model_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    generation: Mapped[int] = mapped_column(BigInt, index=True)


class DeploymentRow(Base):
    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_name: Mapped[str] = mapped_column(String(128), unique=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The ETag: bumped on every change, checked against If-Match.
    revision: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(128))


class PredictionRow(Base):
    """One answered (or failed) prediction, written in batches off the request path."""

    __tablename__ = "predictions"
    __table_args__ = (
        Index(
            "ix_predictions_model_name_model_version_created_at",
            "model_name",
            "model_version",
            "created_at",
        ),
        Index("ix_predictions_created_at", "created_at"),
        Index("ix_predictions_request_id", "request_id"),
    )

    id: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64))  # minted by the service
    # The caller's own X-Request-ID, kept for correlation; never used to find a prediction.
    client_request_id: Mapped[str | None] = mapped_column(String(64))
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[int | None] = mapped_column(Integer)
    variant: Mapped[str | None] = mapped_column(String(64))
    subject_hash: Mapped[str | None] = mapped_column(String(32))
    principal: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    fallback: Mapped[bool] = mapped_column(Boolean, default=False)
    latency_ms: Mapped[float] = mapped_column(Float)
    inputs: Mapped[Any | None] = mapped_column(JSON)
    outputs: Mapped[Any | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PredictionFeedbackRow(Base):
    """Ground truth for a prediction, joined to it by request id."""

    __tablename__ = "prediction_feedback"
    __table_args__ = (
        Index("ix_prediction_feedback_model_name_received_at", "model_name", "received_at"),
    )

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_name: Mapped[str] = mapped_column(String(128))
    actual: Mapped[Any] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    received_by: Mapped[str] = mapped_column(String(128))


class ServingFallbackMarkRow(Base):
    """At most one ``serving.fallback`` audit event per model, version and minute."""

    __tablename__ = "serving_fallback_marks"

    model_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    model_version: Mapped[int] = mapped_column(Integer, primary_key=True)
    minute: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)


class PredictionRollupRow(Base):
    """One model version and variant's predictions in one minute, or one hour (see
    monitoring.rollup)."""

    __tablename__ = "prediction_rollups"
    __table_args__ = (UniqueConstraint("model_name", "span", "minute", "model_version", "variant"),)

    id: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(128))
    span: Mapped[int] = mapped_column(Integer)  # minutes covered: 1 or 60
    minute: Mapped[datetime] = mapped_column(UTCDateTime)  # where the span starts
    model_version: Mapped[int] = mapped_column(Integer)  # 0: failed before a version was known
    variant: Mapped[str] = mapped_column(String(64))  # "": not from a deployment's split
    served: Mapped[dict[str, Any]] = mapped_column(JSON)
    feedback: Mapped[dict[str, Any]] = mapped_column(JSON)
    sample: Mapped[list[Any]] = mapped_column(JSON, default=list)  # input rows, for drift


class VersionReferenceRow(Base):
    """The data a version was trained on, as a profile, for drift."""

    __tablename__ = "version_references"

    model_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    profile: Mapped[dict[str, Any]] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(String(32))  # run-profile | upload
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))


class AbTestRow(Base):
    __tablename__ = "ab_tests"
    __table_args__ = (Index("ix_ab_tests_model_name_status", "model_name", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_name: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="running")
    champion: Mapped[dict[str, Any]] = mapped_column(JSON)  # target, version
    challenger: Mapped[dict[str, Any]] = mapped_column(JSON)
    challenger_share: Mapped[int] = mapped_column(Integer)
    metric: Mapped[str] = mapped_column(String(32))
    min_samples: Mapped[int] = mapped_column(Integer)
    alpha: Mapped[float] = mapped_column(Float)
    max_hours: Mapped[float | None] = mapped_column(Float)
    # The deployment before the test (None: there was none), restored when it ends.
    previous_spec: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_by: Mapped[str] = mapped_column(String(128))
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_by: Mapped[str | None] = mapped_column(String(128))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    promotion_request_id: Mapped[int | None] = mapped_column(Integer)


class AlertRow(Base):
    """One firing of one rule; resolved in place. At most one firing per model and rule."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_model_name_rule_state", "model_name", "rule", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_name: Mapped[str] = mapped_column(String(128))
    rule: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="firing")
    figures: Mapped[dict[str, Any]] = mapped_column(JSON)
    fired_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_figures: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    rollback_request_id: Mapped[int | None] = mapped_column(Integer)


class DriftReportRow(Base):
    """The latest drift evaluation per model version (what /metrics and alerts show)."""

    __tablename__ = "drift_reports"

    model_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    report: Mapped[dict[str, Any]] = mapped_column(JSON)


class ScheduledJobRow(Base):
    """The last run of one job of the in-service scheduler, whoever led then."""

    __tablename__ = "scheduled_jobs"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    every_seconds: Mapped[float] = mapped_column(Float)
    leader: Mapped[str | None] = mapped_column(String(200))
    last_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_duration_ms: Mapped[float | None] = mapped_column(Float)
    last_outcome: Mapped[str | None] = mapped_column(String(16))  # ok | failed
    last_result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    last_error: Mapped[str | None] = mapped_column(Text)
    runs: Mapped[int] = mapped_column(BigInt, default=0)
    failures: Mapped[int] = mapped_column(BigInt, default=0)


class WebhookRow(Base):
    """A receiver of audit events. The secret signs deliveries, so it is kept as given."""

    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[str]] = mapped_column(JSON, default=list)
    format: Mapped[str] = mapped_column(String(16), default="standard")
    secret: Mapped[str] = mapped_column(String(128))
    description: Mapped[str | None] = mapped_column(String(500))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WebhookDeliveryRow(Base):
    """One audit event owed to one webhook: the outbox row, written with the event."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("webhook_id", "event_seq"),
        Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_seq: Mapped[int] = mapped_column(BigInt)
    event_type: Mapped[str] = mapped_column(String(64))
    # The webhook-id header: the same on every attempt, so receivers can drop repeats.
    message_id: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))
    # The latest attempts, newest last: when, the answer, how long.
    attempt_log: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
