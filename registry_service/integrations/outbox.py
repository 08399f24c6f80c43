"""The webhook outbox: a delivery row per matching webhook, written in the transaction
of the audit event it announces, so a committed event is never lost to a crash."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from fnmatch import fnmatchcase

from sqlalchemy.orm import Session

from registry_service.db.base import utcnow
from registry_service.db.models import WebhookDeliveryRow

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


def matches(patterns: Iterable[str], action: str) -> bool:
    """Whether ``action`` is one of the events ``patterns`` (globs like promotion.*) name."""
    return any(fnmatchcase(action, p) for p in patterns)


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def enqueue(session: Session, hooks: Iterable[tuple[int, list[str]]], seq: int, action: str) -> int:
    """Owe event ``seq`` to every webhook of ``hooks`` (id, event patterns) that wants
    ``action``; how many. A disabled webhook is owed them too: they wait until it is
    enabled again (or deleted)."""
    now = utcnow()
    owed = 0
    for webhook_id, patterns in hooks:
        if matches(patterns, action):
            session.add(
                WebhookDeliveryRow(
                    webhook_id=webhook_id,
                    event_seq=seq,
                    event_type=action,
                    message_id=new_message_id(),
                    status=PENDING,
                    attempts=0,
                    created_at=now,
                    next_attempt_at=now,
                    attempt_log=[],
                )
            )
            owed += 1
    return owed
