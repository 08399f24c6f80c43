"""The audit log: every change, hash-chained, appended in the caller's transaction."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Text, bindparam, cast, func, insert, select, text, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from registry_service.db.base import CANONICAL_JSON, utcnow
from registry_service.db.database import Database
from registry_service.db.models import (
    AuditChainHeadRow,
    AuditEventRow,
    ModelChangeRow,
    WebhookRow,
)
from registry_service.domain.entities import AuditEvent, Page
from registry_service.domain.paging import decode_position, encode_token
from registry_service.integrations.outbox import enqueue
from registry_service.services.context import Context

GENESIS_HASH = "0" * 64
# Events that change which version a model serves, or how: serving processes follow
# them through ``model_changes``, written in the same transaction as the event.
SERVING_CHANGES = frozenset(
    {
        "version.stage_changed",
        "alias.set",
        "alias.deleted",
        "version.deleted",
        "model.deleted",
        "deployment.updated",
        "deployment.deleted",
        "serving.reload",
        "model.out_of_band_change",
    }
)
# Seconds a thread waits behind others of its process before it queues in the
# database anyway.
QUEUE_AT_MOST = 0.25
# session.info key: the transaction that holds the chain head lock.
_HOLDS_CHAIN = "registry_audit_chain_locked_by"
# From this many events on, verification splits the chain across one process per core.
PARALLEL_FROM = 200_000


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


# The columns an event's hash covers, in the order _fields takes them.
HASHED_COLUMNS = (
    "seq",
    "occurred_at",
    "actor",
    "action",
    "model_name",
    "model_version",
    "request_id",
    "before",
    "after",
    "subject",
)
_string = json.encoder.encode_basestring  # what CANONICAL_JSON uses for str


def _str(value: str | None) -> str:
    return "null" if value is None else _string(value)


def _int(value: int | None) -> str:
    return "null" if value is None else int.__repr__(value)


def canonical_parts(
    actor: str,
    action: str,
    model_name: str | None,
    model_version: int | None,
    request_id: str | None,
    before: str,
    after: str,
    subject: str | None,
) -> tuple[str, str, str, str]:
    """The text an event's hash is taken of, around the three values it gets when it
    is appended: ``p0 + occurred_at + p1 + prev_hash + p2 + str(seq) + p3`` is
    CANONICAL_JSON of its fields plus ``prev_hash``. The gaps take their values as they
    are (an ISO time and hex digits need no escaping). ``before`` and ``after`` come
    already in canonical JSON, as they are stored, so verification hashes stored text as
    it is, and an append hands the parts to the database, which fills the gaps."""
    p0 = "".join(
        (
            '{"action":',
            _string(action),
            ',"actor":',
            _string(actor),
            ',"after":',
            after,
            ',"before":',
            before,
            ',"model_name":',
            _str(model_name),
            ',"model_version":',
            _int(model_version),
            ',"occurred_at":"',
        )
    )
    p2 = '","request_id":' + _str(request_id) + ',"seq":'
    # Added after the first events were written: only hashed when present, so older
    # events keep verifying.
    p3 = "}" if subject is None else ',"subject":' + _string(subject) + "}"
    return p0, '","prev_hash":"', p2, p3


def canonical_event(prev_hash: str, seq: int, occurred_at: str, *fields: Any) -> str:
    p0, p1, p2, p3 = canonical_parts(*fields)
    return p0 + occurred_at + p1 + prev_hash + p2 + int.__repr__(seq) + p3


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def event_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    return _sha256(
        canonical_event(
            prev_hash,
            fields["seq"],
            fields["occurred_at"],
            fields["actor"],
            fields["action"],
            fields["model_name"],
            fields["model_version"],
            fields["request_id"],
            CANONICAL_JSON.encode(fields["before"]),
            CANONICAL_JSON.encode(fields["after"]),
            fields.get("subject"),
        )
    )


def _fields(
    seq, occurred_at, actor, action, model_name, model_version, request_id, before, after, subject
) -> dict[str, Any]:
    fields = {
        "seq": seq,
        "occurred_at": _iso(occurred_at),
        "actor": actor,
        "action": action,
        "model_name": model_name,
        "model_version": model_version,
        "request_id": request_id,
        "before": before,
        "after": after,
    }
    if subject is not None:
        fields["subject"] = subject
    return fields


def hashed_fields(row: Any) -> dict[str, Any]:
    """The canonical content of an event: an ORM row or a plain result row."""
    return _fields(*(getattr(row, name) for name in HASHED_COLUMNS))


def _entity(row: Any) -> AuditEvent:
    """An event from a row of the events table (plain rows: the ORM's instances cost
    more than the read on a request's trail)."""
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


@dataclass(frozen=True)
class _Walk:
    """One pass over events (after_seq, last_seq]: the first break, if any."""

    broken: tuple[int, str] | None
    checked: int
    first_prev: str | None  # the prev_hash the first event carries
    last_hash: str | None
    next_seq: int


def _stored_columns(dialect: str) -> list[Any]:
    """The hashed columns as the text the hash is taken of, where the database can
    give it: JSON as stored, and on PostgreSQL the time already in ISO form."""
    table = AuditEventRow.__table__.c
    columns = []
    for name in HASHED_COLUMNS:
        column = table[name]
        if name in ("before", "after"):
            column = cast(column, Text)
        elif name == "occurred_at" and dialect == "postgresql":
            column = func.to_char(
                func.timezone("UTC", column), 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'
            )
        columns.append(column)
    return columns


def _recanonical(stored: str | None) -> str:
    return "null" if stored is None else CANONICAL_JSON.encode(json.loads(stored))


def _matches(digest, prev_hash, seq, occurred, rest, before, after, subject) -> bool:
    """Whether an event's stored content still hashes to its digest."""
    text = canonical_event(
        prev_hash, seq, occurred, *rest, before or "null", after or "null", subject
    )
    if _sha256(text) == digest:
        return True
    # JSON written before it was stored in canonical form: parse and encode it.
    text = canonical_event(
        prev_hash, seq, occurred, *rest, _recanonical(before), _recanonical(after), subject
    )
    return _sha256(text) == digest


def _walk_chain(
    session: Session, after_seq: int, last_seq: int, expected_prev: str | None, batch_size: int
) -> _Walk:
    """Check every event in (after_seq, last_seq]: its place, its link and its hash.

    ``expected_prev`` None takes the first event's link on trust: the caller checks it
    against the range before (ranges verified in parallel)."""
    table = AuditEventRow.__table__.c
    # Plain tuples of stored text, streamed: this walks every event ever written, and
    # parsing and re-encoding JSON cost more than the hashing.
    rows = session.execute(
        select(table.prev_hash, table.hash, *_stored_columns(session.get_bind().dialect.name))
        .where(table.seq > after_seq, table.seq <= last_seq)
        .order_by(table.seq)
        .execution_options(yield_per=batch_size)
    )
    expected_seq, checked, first_prev, last_hash = after_seq + 1, 0, None, None
    for batch in rows.partitions():
        for prev_hash, digest, seq, occurred, *rest, before, after, subject in batch:
            checked += 1
            if first_prev is None:
                first_prev = prev_hash
                expected_prev = prev_hash if expected_prev is None else expected_prev
            broken = None
            if seq != expected_seq:
                broken = (expected_seq, f"event {expected_seq} is missing")
            elif prev_hash != expected_prev:
                broken = (seq, "prev_hash does not match the previous event's hash")
            else:
                if not isinstance(occurred, str):
                    occurred = _iso(occurred)
                if not _matches(digest, prev_hash, seq, occurred, rest, before, after, subject):
                    broken = (seq, "the event's content no longer matches its hash")
            if broken:
                return _Walk(broken, checked, first_prev, None, seq)
            expected_prev, last_hash, expected_seq = digest, digest, seq + 1
    return _Walk(None, checked, first_prev, last_hash, expected_seq)


def _walk_range(url: str, after_seq: int, last_seq: int, batch_size: int) -> _Walk:
    """A worker process's share of a parallel verification, on its own connection."""
    db = Database(url)
    try:
        with db.read() as session:
            return _walk_chain(session, after_seq, last_seq, None, batch_size)
    finally:
        db.dispose()


def _stitch(walks: list[_Walk], starts: list[int], expected_prev: str) -> _Walk:
    """Join consecutive ranges: each must start where the one before ended."""
    checked = 0
    for walk, start, end in zip(walks, starts, [*starts[1:], None], strict=True):
        checked += walk.checked
        if walk.first_prev is not None and walk.first_prev != expected_prev:
            broken = (start + 1, "prev_hash does not match the previous event's hash")
            return _Walk(broken, checked, None, None, start + 1)
        if walk.broken is not None:
            return _Walk(walk.broken, checked, None, None, walk.next_seq)
        if end is not None and walk.next_seq != end + 1:
            broken = (walk.next_seq, f"event {walk.next_seq} is missing")
            return _Walk(broken, checked, None, None, walk.next_seq)
        expected_prev = walk.last_hash or expected_prev
    return _Walk(None, checked, None, expected_prev, walks[-1].next_seq)


_HEAD = AuditChainHeadRow.__table__
_EVENTS = AuditEventRow.__table__
_CHANGES = ModelChangeRow.__table__
_EVENT_COLUMNS = (*HASHED_COLUMNS, "prev_hash", "hash")
# Appends queue on the head lock, so their statements are built once: building and
# keying a statement per call cost more than the round trips it makes.
_LOCK_HEAD = (
    select(_HEAD.c.seq, _HEAD.c.hash, _HEAD.c.webhooks_seq).where(_HEAD.c.id == 1).with_for_update()
)


@functools.cache
def _sqlite_append(model_changed: bool) -> tuple[Any, ...]:
    """Insert the event (parameters e_*), move the head to it, and for a serving
    change bump the model's generation."""
    insert_event = insert(_EVENTS).values({c: bindparam(f"e_{c}") for c in _EVENT_COLUMNS})
    move_head = (
        update(_HEAD)
        .where(_HEAD.c.id == 1)
        .values(
            seq=bindparam("e_seq"),
            hash=bindparam("e_hash"),
            webhooks_seq=bindparam("h_webhooks_seq"),
        )
    )
    if not model_changed:
        return insert_event, move_head
    upsert = sqlite.insert(_CHANGES).values(
        model_name=bindparam("e_model_name"), generation=bindparam("e_seq")
    )
    upsert = upsert.on_conflict_do_update(
        index_elements=["model_name"], set_={"generation": upsert.excluded.generation}
    )
    return insert_event, move_head, upsert


@functools.cache
def _postgres_append(n: int) -> Any:
    """The whole append of ``n`` events in one statement: lock the head, take each
    event's hash of its canonical text with its predecessor's hash and seq put in the
    gaps, insert the events, move the head. The lock is then held for this statement
    and the commit only, with no round trip to us in between. Parameters of event ``i``
    end in ``_i``."""
    links = []
    for i in range(n):
        if i == 0:
            # The time is taken once the lock is held, so times follow the chain's order.
            prev, at = "head", "now.occurred_at"
            source = "head, LATERAL (SELECT clock_timestamp() AS occurred_at) AS now"
        else:
            prev = source = f"e{i - 1}"
            at = f"{prev}.occurred_at"
        links.append(
            f"""e{i} AS (
    SELECT {prev}.seq + 1 AS seq, {prev}.hash AS prev_hash, {prev}.webhooks_seq,
           {at} AS occurred_at,
           encode(sha256(convert_to(
               :p0_{i} || to_char(timezone('UTC', {at}), 'YYYY-MM-DD"T"HH24:MI:SS.US')
               || '+00:00' || :p1_{i} || {prev}.hash || :p2_{i} || ({prev}.seq + 1)::text
               || :p3_{i}, 'UTF8'
           )), 'hex') AS hash
    FROM {source}
)"""
        )
    rows = "\n    UNION ALL ".join(
        f"SELECT seq, occurred_at, CAST(:actor_{i} AS text), CAST(:action_{i} AS text), "
        f"CAST(:model_name_{i} AS text), CAST(:model_version_{i} AS integer), "
        f"CAST(:request_id_{i} AS text), CAST(:subject_{i} AS text), "
        f"CAST(:before_{i} AS json), CAST(:after_{i} AS json), prev_hash, hash FROM e{i}"
        for i in range(n)
    )
    changes = "\n    UNION ALL ".join(
        f"SELECT CAST(:model_name_{i} AS text), seq FROM e{i} WHERE :serving_change_{i}"
        for i in range(n)
    )
    results = " UNION ALL ".join(
        f"SELECT seq, prev_hash, hash, webhooks_seq, occurred_at FROM e{i}" for i in range(n)
    )
    return text(
        f"""
WITH head AS (
    SELECT seq, hash, webhooks_seq FROM audit_chain_head WHERE id = 1 FOR UPDATE
), {", ".join(links)}, appended AS (
    INSERT INTO audit_events (seq, occurred_at, actor, action, model_name, model_version,
                              request_id, subject, before, after, prev_hash, hash)
    {rows}
), moved AS (
    UPDATE audit_chain_head
    SET seq = last.seq, hash = last.hash,
        webhooks_seq = CASE WHEN :webhook_change THEN last.seq ELSE last.webhooks_seq END
    FROM e{n - 1} AS last WHERE audit_chain_head.id = 1
), changed AS (
    INSERT INTO model_changes (model_name, generation)
    {changes}
    ON CONFLICT (model_name) DO UPDATE SET generation = excluded.generation
)
{results} ORDER BY seq
"""
    )


@dataclass(frozen=True)
class Entry:
    """An event to append, as its writer gives it; the append adds its place in the
    chain (seq, time, hashes)."""

    action: str
    model_name: str | None = None
    model_version: int | None = None
    subject: str | None = None
    before: Any = None
    after: Any = None


@dataclass(frozen=True)
class _Prepared:
    """An entry with what its append needs that does not depend on the chain's head."""

    fields: dict[str, Any]
    before: Any
    after: Any
    parts: tuple[str, str, str, str]
    params: dict[str, Any]
    webhook_change: bool
    serving_change: bool


def _prepare(ctx: Context, entry: Entry) -> _Prepared:
    before, after = to_json_value(entry.before), to_json_value(entry.after)
    before_text, after_text = CANONICAL_JSON.encode(before), CANONICAL_JSON.encode(after)
    fields = {
        "actor": ctx.actor,
        "action": entry.action,
        "model_name": entry.model_name,
        "model_version": entry.model_version,
        "request_id": ctx.request_id,
        "subject": entry.subject,
    }
    parts = canonical_parts(
        ctx.actor,
        entry.action,
        entry.model_name,
        entry.model_version,
        ctx.request_id,
        before_text,
        after_text,
        entry.subject,
    )
    serving_change = entry.model_name is not None and entry.action in SERVING_CHANGES
    return _Prepared(
        fields=fields,
        before=before,
        after=after,
        parts=parts,
        params={
            **fields,
            **dict(zip(("p0", "p1", "p2", "p3"), parts, strict=True)),
            "before": None if before is None else before_text,
            "after": None if after is None else after_text,
            "serving_change": serving_change,
        },
        webhook_change=entry.action.startswith("webhook."),
        serving_change=serving_change,
    )


_TRAIL = select(_EVENTS).where(_EVENTS.c.subject == bindparam("subject")).order_by(_EVENTS.c.seq)


def _webhooks(session: Session) -> list[tuple[int, list[str]]]:
    return [(hook_id, events) for hook_id, events in session.execute(_WEBHOOKS)]


_WEBHOOKS = select(WebhookRow.id, WebhookRow.events)


class AuditLog:
    def __init__(self, db: Database) -> None:
        self.db = db
        # (webhooks_seq, [(webhook id, event patterns)]): re-read when the head's
        # webhooks_seq moves, which every webhook change does under the chain lock.
        self._webhooks: tuple[int, list[tuple[int, list[str]]]] | None = None
        self._gate = threading.Lock()

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
        """Add one event inside ``session``'s transaction (see ``append_all``)."""
        entry = Entry(action, model_name, model_version, subject, before, after)
        return self.append_all(session, ctx, [entry])[0]

    def append_all(self, session: Session, ctx: Context, entries: list[Entry]) -> list[AuditEvent]:
        """Add events, in order, inside ``session``'s transaction; on PostgreSQL in one
        statement.

        The chain head row is locked first, so concurrent appends queue up and the
        chain never forks; the lock is released when the caller commits. Appends are
        serialised on it, so everything that does not depend on the head is done
        before it is taken.
        """
        session.flush()  # the caller's own writes, before the lock is taken
        prepared = [_prepare(ctx, entry) for entry in entries]
        if sum(p.serving_change for p in prepared) > 1 or (
            len(prepared) > 1 and any(p.webhook_change for p in prepared)
        ):
            # One statement moves a model's generation and the webhooks' mark once.
            return [event for p in prepared for event in self._append(session, [p])]
        return self._append(session, prepared) if prepared else []

    def _append(self, session: Session, prepared: list[_Prepared]) -> list[AuditEvent]:
        if session.get_bind().dialect.name == "postgresql":
            params: dict[str, Any] = {"webhook_change": prepared[0].webhook_change}
            for i, p in enumerate(prepared):
                params.update({f"{k}_{i}": v for k, v in p.params.items()})
            with self._queue(session):
                rows = session.execute(_postgres_append(len(prepared)), params).all()
            events = [
                AuditEvent(
                    **p.fields,
                    seq=seq,
                    occurred_at=occurred_at.astimezone(UTC),
                    before=p.before,
                    after=p.after,
                    prev_hash=prev_hash,
                    hash=digest,
                )
                for p, (seq, prev_hash, digest, _, occurred_at) in zip(prepared, rows, strict=True)
            ]
            webhooks_seq = rows[-1].webhooks_seq
        else:
            events = []
            for p in prepared:
                event, webhooks_seq = self._append_on_sqlite(session, p)
                events.append(event)
        # A webhook change is announced to the webhooks as this transaction leaves
        # them, which no other process has seen yet: read, never remembered.
        if prepared[0].webhook_change:
            hooks = _webhooks(session)
        else:
            hooks = self._webhooks_for(session, webhooks_seq)
        if hooks:
            for event in events:
                enqueue(session, hooks, event.seq, event.action)
            session.flush()
        return events

    def _append_on_sqlite(self, session: Session, p: _Prepared) -> tuple[AuditEvent, int]:
        head = self._lock_head(session)
        seq, prev_hash, webhooks_seq = head.seq + 1, head.hash, head.webhooks_seq
        occurred_at = utcnow()  # microseconds: what both SQLite and PostgreSQL keep
        p0, p1, p2, p3 = p.parts
        event = AuditEvent(
            **p.fields,
            seq=seq,
            occurred_at=occurred_at,
            before=p.before,
            after=p.after,
            prev_hash=prev_hash,
            hash=_sha256(p0 + _iso(occurred_at) + p1 + prev_hash + p2 + str(seq) + p3),
        )
        params = {f"e_{c}": getattr(event, c) for c in _EVENT_COLUMNS}
        params["h_webhooks_seq"] = seq if p.webhook_change else webhooks_seq
        for statement in _sqlite_append(p.serving_change):
            session.execute(statement, params)
        return event, webhooks_seq

    def _lock_head(self, session: Session) -> Any:
        with self._queue(session):
            return session.execute(_LOCK_HEAD).one()

    @contextmanager
    def _queue(self, session: Session) -> Iterator[None]:
        """Queue here for the head lock, one thread of this process in the database
        at a time: many backends waiting on one row lock slow every handover. The wait
        here is bounded, so that it can never close a deadlock the database would not
        see (a thread queued here may hold a row the lock holder waits for). A
        transaction that holds the lock already (an earlier append, lock_chain) does
        not queue: the thread in the database would be waiting for it."""
        transaction = session.get_transaction()
        if transaction is not None and session.info.get(_HOLDS_CHAIN) is transaction:
            yield
            return
        queued = self._gate.acquire(timeout=QUEUE_AT_MOST)
        try:
            yield
            session.info[_HOLDS_CHAIN] = transaction
        finally:
            if queued:
                self._gate.release()

    def _webhooks_for(self, session: Session, webhooks_seq: int) -> list[tuple[int, list[str]]]:
        """The webhooks as of the last webhook change (seq ``webhooks_seq``): every
        change is committed, since this transaction changed none."""
        cached = self._webhooks
        if cached is not None and cached[0] == webhooks_seq:
            return cached[1]
        hooks = _webhooks(session)
        self._webhooks = (webhooks_seq, hooks)
        return hooks

    def lock_chain(self, session: Session) -> None:
        """Take the chain head lock now. A transaction that locks other rows before it
        appends takes this first, so every writer locks in one order (no deadlock)."""
        self._lock_head(session)

    def record(self, ctx: Context, action: str, **fields: Any) -> AuditEvent:
        with self.db.transaction() as session:
            return self.append(session, ctx, action, **fields)

    def list(
        self, filters: AuditFilter, max_results: int, page_token: str | None
    ) -> Page[AuditEvent]:
        """Newest first; the token is the last sequence number returned."""
        before_seq = decode_position(page_token, 2**63 - 1)
        stmt = select(AuditEventRow.__table__)
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
            rows = session.execute(stmt).all()
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
        with self.db.read() as session:
            return self.trail_in(session, subject)

    @staticmethod
    def trail_in(session: Session, subject: str) -> list[AuditEvent]:
        """``trail`` as ``session`` sees it."""
        return [_entity(r) for r in session.execute(_TRAIL, {"subject": subject})]

    def _walk_parallel(
        self, after_seq: int, head_seq: int, expected_prev: str, workers: int, batch_size: int
    ) -> _Walk:
        step = -(-(head_seq - after_seq) // workers)
        starts = [after_seq + step * i for i in range(workers) if after_seq + step * i < head_seq]
        ends = [*starts[1:], head_seq]
        # Spawned, not forked: the caller may be a threaded server process.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=len(starts), mp_context=context) as pool:
            walks = list(
                pool.map(
                    _walk_range,
                    [self.db.url] * len(starts),
                    starts,
                    ends,
                    [batch_size] * len(starts),
                )
            )
        return _stitch(walks, starts, expected_prev)

    def verify(
        self,
        after_seq: int = 0,
        after_hash: str | None = None,
        batch_size: int = 5000,
        workers: int | None = None,
    ) -> ChainVerification:
        """Recompute the chain: every hash, every link, and the head.

        From genesis by default; from a checkpoint (a head exported earlier) when
        ``after_seq`` and ``after_hash`` are given, which costs only the newer events.
        Long chains are split across ``workers`` processes (default: one per core from
        PARALLEL_FROM events on), each hashing its own range.
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
        total = head_seq - after_seq
        if workers is None:
            workers = (os.cpu_count() or 1) if total >= PARALLEL_FROM else 1
        if broken is None and workers > 1 and total >= workers:
            walk = self._walk_parallel(after_seq, head_seq, expected_prev, workers, batch_size)
        elif broken is None:
            with self.db.read() as session:
                walk = _walk_chain(session, after_seq, head_seq, expected_prev, batch_size)
        if broken is None:
            broken, checked = walk.broken, walk.checked
            expected_prev, expected_seq = walk.last_hash or expected_prev, walk.next_seq
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
