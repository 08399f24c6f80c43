"""The audit chain on SQLite: linked hashes, no fork under concurrent writers."""

import threading

from sqlalchemy import select, text

from registry_service.db.models import AuditEventRow
from registry_service.services.audit import (
    GENESIS_HASH,
    AuditFilter,
    event_hash,
    hashed_fields,
)
from registry_service.services.context import Context


def test_events_link_to_their_predecessor(audit, ctx):
    first = audit.record(ctx, "model.created", model_name="m", after={"description": "x"})
    second = audit.record(ctx, "model.updated", model_name="m", before={"a": 1}, after={"a": 2})
    assert first.seq == 1 and first.prev_hash == GENESIS_HASH
    assert second.seq == 2 and second.prev_hash == first.hash
    assert audit.head() == (2, second.hash)


def test_stored_events_rehash_to_their_hash(audit, ctx, db):
    audit.record(
        ctx,
        "version.registered",
        model_name="m",
        model_version=3,
        after={"metrics": {"auc": 0.91, "loss": float("nan")}, "tags": {"k": "v"}},
    )
    with db.read() as session:
        row = session.execute(select(AuditEventRow)).scalar_one()
        assert row.after["metrics"]["loss"] == "nan"
        assert event_hash(row.prev_hash, hashed_fields(row)) == row.hash


def test_altering_a_row_breaks_its_hash(audit, ctx, db):
    audit.record(ctx, "model.created", model_name="m", after={"description": "x"})
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET actor = 'mallory'"))
    with db.read() as session:
        row = session.execute(select(AuditEventRow)).scalar_one()
        assert event_hash(row.prev_hash, hashed_fields(row)) != row.hash


def test_concurrent_appends_never_fork(audit, db):
    def write(n):
        for i in range(10):
            audit.record(
                Context(actor=f"w{n}"), "model.updated", model_name=f"m{n}", after={"i": i}
            )

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with db.read() as session:
        rows = list(session.execute(select(AuditEventRow).order_by(AuditEventRow.seq)).scalars())
    assert [r.seq for r in rows] == list(range(1, 41))
    prev = GENESIS_HASH
    for row in rows:
        assert row.prev_hash == prev
        prev = row.hash


def test_list_filters_and_pages_newest_first(audit, ctx):
    for i in range(5):
        audit.record(ctx, "model.updated", model_name="a", after={"i": i})
    audit.record(Context(actor="other"), "model.created", model_name="b")
    page = audit.list(AuditFilter(model_name="a"), 2, None)
    assert [e.after["i"] for e in page.items] == [4, 3]
    rest = audit.list(AuditFilter(model_name="a"), 10, page.next_page_token)
    assert [e.after["i"] for e in rest.items] == [2, 1, 0]
    assert rest.next_page_token is None
    assert [e.model_name for e in audit.list(AuditFilter(actor="other"), 10, None).items] == ["b"]


def test_verify_reports_the_first_altered_event(db, audit, ctx):
    for i in range(4):
        audit.record(ctx, "model.updated", model_name="m", after={"i": i}, subject=f"promotion:{i}")
    assert audit.verify(batch_size=3).ok
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET subject = 'promotion:9' WHERE seq = 2"))
    result = audit.verify(batch_size=3)
    assert (result.ok, result.first_broken_seq, result.events_checked) == (False, 2, 2)
