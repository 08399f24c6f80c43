"""The audit log: every change, hash-chained, appended in the caller's transaction."""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry_service.db.base import utcnow
from registry_service.db.database import Database
from registry_service.db.models import AuditChainHeadRow, AuditEventRow
from registry_service.domain.entities import AuditEvent, Page
from registry_service.domain.paging import decode_position, encode_token
from registry_service.services.context import Context

GENESIS_HASH = "0" * 64


def to_json_value(value: Any) -> Any:
    """Plain JSON that survives a database round trip unchanged (hashes depend on it)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json_value(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _iso(ts: datetime) -> str:
    return ts.isoformat(timespec="microseconds")


def event_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    canonical = json.dumps(
        {**fields, "prev_hash": prev_hash},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def hashed_fields(row: Any) -> dict[str, Any]:
    """The canonical content of an event: an ORM row or a plain result row."""
    fields = {
        "seq": row.seq,
        "occurred_at": _iso(row.occurred_at),
        "actor": row.actor,
        "action": row.action,
        "model_name": row.model_name,
        "model_version": row.model_version,
        "request_id": row.request_id,
        "before": row.before,
        "after": row.after,
    }
    # Added after the first events were written: only hashed when present, so
    # older events keep verifying.
    if row.subject is not None:
        fields["subject"] = row.subject
    return fields


def _entity(row: AuditEventRow) -> AuditEvent:
    return AuditEvent(
        seq=row.seq,
        occurred_at=row.occurred_at,
        actor=row.actor,
        action=row.action,
        model_name=row.model_name,
        model_version=row.model_version,
        request_id=row.request_id,
        subject=row.subject,
        before=row.before,
        after=row.after,
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


@dataclass(frozen=True)
class AuditFilter:
    model_name: str | None = None
    model_version: int | None = None
    actor: str | None = None
    action: str | None = None
    subject: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class AuditLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    def append(
        self,
        session: Session,
        ctx: Context,
        action: str,
        *,
        model_name: str | None = None,
        model_version: int | None = None,
        subject: str | None = None,
        before: Any = None,
        after: Any = None,
    ) -> AuditEvent:
        """Add one event inside ``session``'s transaction.

        The chain head row is locked first, so concurrent appends queue up and the
        chain never forks; the lock is released when the caller commits.
        """
        head = session.execute(
            select(AuditChainHeadRow).where(AuditChainHeadRow.id == 1).with_for_update()
        ).scalar_one()
        row = AuditEventRow(
            seq=head.seq + 1,
            # Microsecond precision is what both SQLite and PostgreSQL keep.
            occurred_at=utcnow(),
            actor=ctx.actor,
            action=action,
            model_name=model_name,
            model_version=model_version,
            request_id=ctx.request_id,
            subject=subject,
            before=to_json_value(before),
            after=to_json_value(after),
            prev_hash=head.hash,
            hash="",
        )
        row.hash = event_hash(head.hash, hashed_fields(row))
        head.seq, head.hash = row.seq, row.hash
        session.add(row)
        session.flush()
        return _entity(row)

    def record(self, ctx: Context, action: str, **fields: Any) -> AuditEvent:
        with self.db.transaction() as session:
            return self.append(session, ctx, action, **fields)

    def list(
        self, filters: AuditFilter, max_results: int, page_token: str | None
    ) -> Page[AuditEvent]:
        """Newest first; the token is the last sequence number returned."""
        before_seq = decode_position(page_token, 2**63 - 1)
        stmt = select(AuditEventRow)
        if filters.model_name is not None:
            stmt = stmt.where(AuditEventRow.model_name == filters.model_name)
        if filters.model_version is not None:
            stmt = stmt.where(AuditEventRow.model_version == filters.model_version)
        if filters.actor is not None:
            stmt = stmt.where(AuditEventRow.actor == filters.actor)
        if filters.action is not None:
            stmt = stmt.where(AuditEventRow.action == filters.action)
        if filters.subject is not None:
            stmt = stmt.where(AuditEventRow.subject == filters.subject)
        if filters.since is not None:
            stmt = stmt.where(AuditEventRow.occurred_at >= filters.since)
        if filters.until is not None:
            stmt = stmt.where(AuditEventRow.occurred_at < filters.until)
        if before_seq is not None:
            stmt = stmt.where(AuditEventRow.seq < before_seq)
        order = AuditEventRow.seq
        if filters.since is not None or filters.until is not None:
            # The planner would walk an (x, seq) index backwards and filter on time,
            # which reads everything newer than an old window; "seq + 0" makes it use
            # an (x, occurred_at) index and sort only the window's events.
            order = AuditEventRow.seq + 0
        stmt = stmt.order_by(order.desc()).limit(max_results + 1)
        with self.db.read() as session:
            rows = list(session.execute(stmt).scalars())
        more = len(rows) > max_results
        rows = rows[:max_results]
        token = encode_token({"before": rows[-1].seq}) if more and rows else None
        return Page([_entity(r) for r in rows], token)

    def head(self) -> tuple[int, str]:
        with self.db.read() as session:
            head = session.get(AuditChainHeadRow, 1)
            return head.seq, head.hash

    def trail(self, subject: str) -> list[AuditEvent]:
        """Every event about ``subject``, oldest first."""
        stmt = (
            select(AuditEventRow)
            .where(AuditEventRow.subject == subject)
            .order_by(AuditEventRow.seq)
        )
        with self.db.read() as session:
            return [_entity(r) for r in session.execute(stmt).scalars()]

    def verify(
        self, after_seq: int = 0, after_hash: str | None = None, batch_size: int = 5000
    ) -> ChainVerification:
        """Recompute the chain: every hash, every link, and the head.

        From genesis by default; from a checkpoint (a head exported earlier) when
        ``after_seq`` and ``after_hash`` are given, which costs only the newer events.
        """
        started = time.perf_counter()
        expected_prev, expected_seq, checked = GENESIS_HASH, after_seq + 1, 0
        broken: tuple[int, str] | None = None
        with self.db.read() as session:
            head = session.get(AuditChainHeadRow, 1)
            head_seq, head_hash = head.seq, head.hash
            if after_seq:
                anchor = session.get(AuditEventRow, after_seq)
                if after_seq > head_seq or anchor is None:
                    broken = (after_seq, "the checkpoint event does not exist")
                elif anchor.hash != after_hash:
                    broken = (after_seq, "the checkpoint event's hash differs from the export")
                else:
                    expected_prev = anchor.hash
            last_seq = after_seq
            while broken is None:
                # Plain rows, not ORM objects: this walks every event ever written.
                rows = list(
                    session.execute(
                        select(*AuditEventRow.__table__.c)
                        .where(AuditEventRow.seq > last_seq, AuditEventRow.seq <= head_seq)
                        .order_by(AuditEventRow.seq)
                        .limit(batch_size)
                    )
                )
                if not rows:
                    break
                for row in rows:
                    checked += 1
                    if row.seq != expected_seq:
                        broken = (expected_seq, f"event {expected_seq} is missing")
                    elif row.prev_hash != expected_prev:
                        broken = (row.seq, "prev_hash does not match the previous event's hash")
                    elif event_hash(row.prev_hash, hashed_fields(row)) != row.hash:
                        broken = (row.seq, "the event's content no longer matches its hash")
                    if broken:
                        break
                    expected_prev, expected_seq = row.hash, row.seq + 1
                last_seq = rows[-1].seq
        if broken is None and (expected_seq - 1 != head_seq or expected_prev != head_hash):
            broken = (expected_seq, "the chain ends before the recorded head")
        return ChainVerification(
            ok=broken is None,
            events_checked=checked,
            from_seq=after_seq,
            head_seq=head_seq,
            head_hash=head_hash,
            first_broken_seq=broken[0] if broken else None,
            problem=broken[1] if broken else None,
            seconds=round(time.perf_counter() - started, 3),
        )


@dataclass(frozen=True)
class ChainVerification:
    ok: bool
    events_checked: int
    from_seq: int
    head_seq: int
    head_hash: str
    first_broken_seq: int | None
    problem: str | None
    seconds: float
