"""Promotion requests as stored: loaded into the domain model and written back.

Plain statements on the tables, not the ORM's unit of work: a request is read with its
approvals and comments in two statements whatever the batch size, and a step writes
one UPDATE plus the approvals and comments it added. The approval that executes a
promotion reads and writes its request twice, so this is on that path's clock.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict
from typing import Any

from sqlalchemy import Select, bindparam, cast, insert, null, select, union_all, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from registry_service.db.models import (
    PromotionApprovalRow,
    PromotionCommentRow,
    PromotionRequestRow,
)
from registry_service.domain.policy import PolicyRule, Target, TargetType
from registry_service.domain.promotion import Approval, Comment, Promotion, Status
from registry_service.errors import OpenRequestExists
from registry_service.services.audit import Entry, to_json_value

REQUESTS = PromotionRequestRow.__table__
APPROVALS = PromotionApprovalRow.__table__
COMMENTS = PromotionCommentRow.__table__


def request_entry(p: Promotion, action: str, after: dict[str, Any]) -> Entry:
    """An audit event about request ``p``: every step of every request is one. A traffic
    change names no model version (its ``version`` is a deployment revision)."""
    return Entry(
        action,
        model_name=p.model_name,
        model_version=None if p.changes_traffic else p.version,
        subject=p.subject,
        after={"request_id": p.id, "status": p.status.value, **after},
    )


def requests() -> Select:
    """Every column of the requests table, for ``PromotionRecords.select``."""
    return select(REQUESTS)


def _children() -> Select:
    """The approvals (``kind`` NULL) and comments of requests ``ids``, each in insertion
    order, in one statement."""
    ids = bindparam("ids", expanding=True)
    approvals = select(
        APPROVALS.c.request_id,
        APPROVALS.c.id,
        cast(null(), COMMENTS.c.kind.type).label("kind"),
        APPROVALS.c.approver.label("author"),
        APPROVALS.c.comment.label("body"),
        APPROVALS.c.created_at,
    ).where(APPROVALS.c.request_id.in_(ids))
    comments = select(
        COMMENTS.c.request_id,
        COMMENTS.c.id,
        COMMENTS.c.kind,
        COMMENTS.c.author,
        COMMENTS.c.body,
        COMMENTS.c.created_at,
    ).where(COMMENTS.c.request_id.in_(ids))
    both = union_all(approvals, comments).subquery()
    return select(both).order_by(both.c.kind.is_not(None), both.c.id)


# Built once: a step runs these on every request it touches, and building and keying a
# statement costs more than its round trip.
_CHILDREN = _children()
_BY_ID = select(REQUESTS).where(REQUESTS.c.id == bindparam("request_id"))
_BY_ID_LOCKED = _BY_ID.with_for_update()
# What a step can change; the parameters are the columns' names with "new_" before them.
_CHANGING = (
    "status",
    "updated_at",
    "decided_at",
    "executed_at",
    "execution_started_at",
    "attempts",
    "last_error",
    "outcome",
    "superseded_by",
)
_SAVE = (
    update(REQUESTS)
    .where(REQUESTS.c.id == bindparam("request_id"))
    .values({c: bindparam(f"new_{c}") for c in _CHANGING})
)


def _to_domain(row: Any, approvals: list[Approval], comments: list[Comment]) -> Promotion:
    return Promotion(
        id=row.id,
        model_name=row.model_name,
        version=row.version,
        target=Target(TargetType(row.target_type), row.target),
        requester=row.requester,
        reason=row.reason,
        archive_existing=row.archive_existing,
        rule=PolicyRule.from_dict(row.rule),
        status=Status(row.status),
        created_at=row.created_at,
        expires_at=row.expires_at,
        replaces_version=row.replaces_version,
        evidence=dict(row.evidence or {}),
        kind=row.kind,
        review_required=row.review_required,
        approvals=approvals,
        comments=comments,
        updated_at=row.updated_at,
        decided_at=row.decided_at,
        executed_at=row.executed_at,
        execution_started_at=row.execution_started_at,
        attempts=row.attempts,
        last_error=row.last_error,
        outcome=row.outcome,
        superseded_by=row.superseded_by,
    )


class PromotionRecords:
    """The requests of one session. It remembers how many approvals and comments each
    loaded request had, so ``save`` inserts only the ones a step added."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._loaded: dict[int, tuple[int, int]] = {}

    def select(
        self, stmt: Select, params: dict[str, Any] | None = None, *, children: bool = True
    ) -> list[Promotion]:
        """The requests ``stmt`` (built on ``requests()``) selects, in its order;
        without ``children``, their approvals and comments are left unread (and empty)."""
        rows = self.session.execute(stmt, params).all()
        if not rows or not children:
            loaded = [_to_domain(row, [], []) for row in rows]
            self._loaded.update((p.id, (0, 0)) for p in loaded)
            return loaded
        approvals: dict[int, list[Approval]] = defaultdict(list)
        comments: dict[int, list[Comment]] = defaultdict(list)
        for c in self.session.execute(_CHILDREN, {"ids": [row.id for row in rows]}):
            if c.kind is None:
                approvals[c.request_id].append(Approval(c.author, c.body, c.created_at))
            else:
                comments[c.request_id].append(Comment(c.author, c.kind, c.body, c.created_at))
        loaded = [_to_domain(row, approvals[row.id], comments[row.id]) for row in rows]
        for p in loaded:
            self._loaded[p.id] = (len(p.approvals), len(p.comments))
        return loaded

    def adopt_children(self, bare: Promotion, known: Promotion) -> None:
        """Give ``bare`` (selected without children) the approvals and comments of
        ``known``, the same request as this transaction found it unchanged."""
        bare.approvals, bare.comments = list(known.approvals), list(known.comments)
        self._loaded[bare.id] = (len(bare.approvals), len(bare.comments))

    def get(self, request_id: int, *, lock: bool = False) -> Promotion | None:
        found = self.select(_BY_ID_LOCKED if lock else _BY_ID, {"request_id": request_id})
        return found[0] if found else None

    def add(self, p: Promotion) -> Promotion:
        """Insert a new request; sets its id."""
        try:
            p.id = self.session.execute(
                insert(REQUESTS)
                .values(
                    model_name=p.model_name,
                    version=p.version,
                    target_type=p.target.type.value,
                    target=p.target.name,
                    archive_existing=p.archive_existing,
                    reason=p.reason,
                    requester=p.requester,
                    kind=p.kind,
                    review_required=p.review_required,
                    status=p.status.value,
                    rule=p.rule.as_dict(),
                    replaces_version=p.replaces_version,
                    evidence=p.evidence,
                    created_at=p.created_at,
                    updated_at=p.updated_at,
                    expires_at=p.expires_at,
                    decided_at=p.decided_at,
                    attempts=p.attempts,
                )
                .returning(REQUESTS.c.id)
            ).scalar_one()
        except IntegrityError as exc:
            raise OpenRequestExists("duplicate") from exc
        self._insert_children(p, 0, 0)
        self._loaded[p.id] = (len(p.approvals), len(p.comments))
        return p

    def save(self, p: Promotion) -> None:
        """Write back what a step changed; reopening into a taken slot is refused."""
        approvals, comments = self._loaded[p.id]
        try:
            self.session.execute(
                _SAVE,
                {
                    "request_id": p.id,
                    **{f"new_{c}": getattr(p, c) for c in _CHANGING},
                    "new_status": p.status.value,
                    "new_outcome": to_json_value(p.outcome),
                },
            )
        except IntegrityError as exc:
            raise OpenRequestExists("duplicate") from exc
        self._insert_children(p, approvals, comments)
        self._loaded[p.id] = (len(p.approvals), len(p.comments))

    def _insert_children(self, p: Promotion, approvals: int, comments: int) -> None:
        # Approval's and Comment's fields are their tables' columns, by name.
        for table, added in (
            (APPROVALS, p.approvals[approvals:]),
            (COMMENTS, p.comments[comments:]),
        ):
            if added:
                self.session.execute(
                    insert(table), [{"request_id": p.id, **asdict(entry)} for entry in added]
                )
