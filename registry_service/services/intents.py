"""The intent log of MLflow writes: what the service is about to change in MLflow,
committed before the call, so that no change can reach MLflow without leaving a trace.

A write whose outcome the service never learned (a timeout, a dropped connection, an
MLflow 5xx) stays ``pending``; ``ModelService.settle_intents`` later reads MLflow and
records what actually happened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry_service.db.base import utcnow
from registry_service.db.database import Database
from registry_service.db.models import MlflowIntentRow
from registry_service.services.audit import to_json_value
from registry_service.services.context import Context

PENDING, APPLIED, RECONCILED, FAILED, UNDONE = (
    "pending",
    "applied",
    "reconciled",
    "failed",
    "undone",
)


@dataclass(frozen=True)
class Subject:
    """What a write changes, and how to tell afterwards whether it did.

    ``kind`` is ``model``, ``version``, or ``registration`` (a new version, whose number
    MLflow assigns: found again by run and source). ``expected`` holds the fields the
    object's snapshot has once the write is fully applied.
    """

    kind: str
    model_name: str
    version: int | None = None
    before: dict[str, Any] | None = None
    expected: dict[str, Any] = field(default_factory=dict)
    payload: dict[str, Any] = field(default_factory=dict)

    def fully_applied(self, snapshot: dict[str, Any] | None) -> bool:
        return snapshot is not None and all(snapshot.get(k) == v for k, v in self.expected.items())


@dataclass(frozen=True)
class Intent:
    id: int
    action: str
    subject: Subject
    actor: str
    request_id: str | None
    created_at: datetime


def _to_intent(row: MlflowIntentRow) -> Intent:
    payload = dict(row.payload or {})
    return Intent(
        id=row.id,
        action=row.action,
        subject=Subject(
            kind=row.subject,
            model_name=row.model_name,
            version=row.version,
            before=row.before,
            expected=payload.pop("expected", {}),
            payload=payload,
        ),
        actor=row.actor,
        request_id=row.request_id,
        created_at=row.created_at,
    )


class IntentLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    def open(self, ctx: Context, action: str, subject: Subject) -> int:
        """Record the intent, committed before MLflow is called."""
        with self.db.transaction() as session:
            row = MlflowIntentRow(
                action=action,
                subject=subject.kind,
                model_name=subject.model_name,
                version=subject.version,
                before=to_json_value(subject.before),
                payload=to_json_value({**subject.payload, "expected": subject.expected}),
                actor=ctx.actor,
                request_id=ctx.request_id,
                status=PENDING,
                created_at=utcnow(),
            )
            session.add(row)
            session.flush()
            return row.id

    def claim(self, session: Session, intent_id: int) -> bool:
        """Lock a pending intent for settling; False when it was settled already."""
        row = session.get(MlflowIntentRow, intent_id, with_for_update=True)
        return row is not None and row.status == PENDING

    def settle(
        self, session: Session, intent_id: int, status: str, detail: str | None = None
    ) -> None:
        row = session.get(MlflowIntentRow, intent_id, with_for_update=True)
        row.status = status
        row.detail = detail
        row.settled_at = utcnow()

    def settle_now(self, intent_id: int, status: str, detail: str | None = None) -> None:
        with self.db.transaction() as session:
            if self.claim(session, intent_id):
                self.settle(session, intent_id, status, detail)

    def pending(self, created_before: datetime, limit: int = 200) -> list[Intent]:
        with self.db.read() as session:
            rows = session.execute(
                select(MlflowIntentRow)
                .where(
                    MlflowIntentRow.status == PENDING,
                    MlflowIntentRow.created_at <= created_before,
                )
                .order_by(MlflowIntentRow.id)
                .limit(limit)
            ).scalars()
            return [_to_intent(row) for row in rows]
