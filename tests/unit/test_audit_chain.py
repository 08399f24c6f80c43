"""The audit chain on SQLite: linked hashes, no fork under concurrent writers."""

import hashlib
import json
import threading
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from registry_service.db.models import AuditEventRow
from registry_service.services.audit import (
    GENESIS_HASH,
    AuditFilter,
    AuditLog,
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


def _chain(audit, ctx, n):
    for i in range(n):
        audit.record(ctx, "model.updated", model_name="m", after={"i": i})


def test_parallel_verification_agrees_with_the_serial_walk(db, audit, ctx):
    _chain(audit, ctx, 9)
    serial, parallel = audit.verify(workers=1), audit.verify(workers=3)
    assert serial.ok and parallel.ok
    assert parallel.events_checked == serial.events_checked == 9
    fourth = next(e for e in audit.list(AuditFilter(), 9, None).items if e.seq == 4)
    resumed = audit.verify(after_seq=4, after_hash=fourth.hash, workers=2)
    assert resumed.ok and resumed.events_checked == 5


def test_parallel_verification_finds_breaks_inside_and_between_ranges(db, audit, ctx):
    _chain(audit, ctx, 9)
    with db.engine.begin() as conn:  # inside the third range (events 7-9)
        conn.execute(text("UPDATE audit_events SET actor = 'mallory' WHERE seq = 8"))
    result = audit.verify(workers=3)
    assert (result.ok, result.first_broken_seq) == (False, 8)
    assert "content" in result.problem
    with db.engine.begin() as conn:  # the first event of the second range
        conn.execute(text("UPDATE audit_events SET prev_hash = hash WHERE seq = 4"))
    result = audit.verify(workers=3)
    assert (result.ok, result.first_broken_seq) == (False, 4)
    assert "prev_hash" in result.problem
    with db.engine.begin() as conn:  # the last event of the first range
        conn.execute(text("DELETE FROM audit_events WHERE seq = 3"))
    result = audit.verify(workers=3)
    assert (result.ok, result.first_broken_seq) == (False, 3)
    assert "missing" in result.problem


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    seq=st.integers(min_value=1, max_value=2**62),
    actor=st.text(),
    action=st.text(),
    model_name=st.none() | st.text(),
    model_version=st.none() | st.integers(min_value=1, max_value=2**31),
    request_id=st.none() | st.text(),
    before=_json_values,
    after=_json_values,
    subject=st.none() | st.text(),
)
def test_the_hashed_text_is_the_canonical_json_of_the_event(
    seq, actor, action, model_name, model_version, request_id, before, after, subject
):
    fields = {
        "seq": seq,
        "occurred_at": "2026-11-23T08:00:00.000001+00:00",
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
    # The definition: sorted keys, no spaces, characters as they are.
    spec = json.dumps(
        {**fields, "prev_hash": "f" * 64},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    assert event_hash("f" * 64, fields) == hashlib.sha256(spec.encode()).hexdigest()


def test_events_stored_in_an_earlier_json_form_still_verify(db, audit, ctx):
    """Rows written before JSON was stored canonically hold json.dumps' spacing and
    key order; they verify, and an altered value in them is still found."""
    audit.record(ctx, "model.updated", model_name="m", after={"b": "é", "a": [1, 2.5]})
    audit.record(ctx, "model.updated", model_name="m", before={"z": 1, "y": None})
    with db.engine.begin() as conn:
        conn.execute(
            text("""UPDATE audit_events SET after = '{"b": "\\u00e9", "a": [1, 2.5]}'
                             WHERE seq = 1""")
        )
        conn.execute(
            text("""UPDATE audit_events SET before = '{"z": 1, "y": null}'
                             WHERE seq = 2""")
        )
    assert audit.verify().ok
    with db.engine.begin() as conn:
        conn.execute(
            text("""UPDATE audit_events SET before = '{"z": 2, "y": null}'
                             WHERE seq = 2""")
        )
    result = audit.verify()
    assert (result.ok, result.first_broken_seq) == (False, 2)


def test_webhooks_changed_by_another_process_are_seen_by_the_next_append(db, ctx):
    """Each process remembers the webhooks between appends; a change made elsewhere
    moves the chain head's webhooks_seq, and the next append here reads them again."""
    from registry_service.db.models import WebhookDeliveryRow
    from registry_service.integrations.webhooks import WebhookService

    here, elsewhere = AuditLog(db), AuditLog(db)
    here.record(ctx, "model.updated", model_name="m")  # remembers: no webhooks
    service = WebhookService(db, elsewhere, public_url="http://registry.example")
    hook, _ = service.create(ctx, "https://hooks.example/a", ["model.*"])
    here.record(ctx, "model.updated", model_name="m")
    with db.read() as session:
        owed = session.execute(select(WebhookDeliveryRow.event_seq)).scalars().all()
    assert owed == [3]

    service.delete(ctx, hook.id)
    # A stale memory would owe the event to a webhook that no longer exists.
    event = here.record(ctx, "model.updated", model_name="m")
    assert event.seq == 5
    with db.read() as session:
        assert session.execute(select(WebhookDeliveryRow)).first() is None
    assert here.verify().ok


def test_a_webhook_change_is_matched_against_the_webhooks_it_leaves(db, ctx):
    """A webhook that wants every event, deleted after appends warmed this process's
    memory of the webhooks: its deletion is not owed to it (it no longer exists), and
    a rolled-back creation leaves nothing owed to a webhook that never existed."""
    from registry_service.db.models import WebhookDeliveryRow, WebhookRow
    from registry_service.integrations.webhooks import WebhookService

    log = AuditLog(db)
    service = WebhookService(db, log, public_url="http://registry.example")
    hook, _ = service.create(ctx, "https://hooks.example/a", ["*"])
    log.record(ctx, "model.updated", model_name="m")  # remembered: the webhook
    service.delete(ctx, hook.id)
    with db.read() as session:
        assert session.execute(select(WebhookDeliveryRow)).first() is None

    class Abandoned(Exception):
        pass

    with pytest.raises(Abandoned), db.transaction() as session:
        row = WebhookRow(
            url="https://hooks.example/b",
            events=["*"],
            format="standard",
            secret="whsec_" + "a" * 32,
            enabled=True,
            created_by="tester",
            created_at=datetime.now(UTC),
            updated_at=datetime.now(UTC),
        )
        session.add(row)
        session.flush()
        log.append(session, ctx, "webhook.created", subject=f"webhook:{row.id}")
        raise Abandoned
    event = log.record(ctx, "model.updated", model_name="m")
    with db.read() as session:
        assert session.execute(select(WebhookDeliveryRow)).first() is None
    assert log.verify().ok and event.seq == log.head()[0]


def test_events_appended_together_link_in_order(audit, ctx, db):
    from registry_service.services.audit import Entry

    first = audit.record(ctx, "model.created", model_name="m")
    with db.transaction() as session:
        events = audit.append_all(
            session,
            ctx,
            [
                Entry("promotion.executed", "m", 1, "promotion:1", after={"a": 1}),
                Entry("version.stage_changed", "m", 1, "promotion:1", {"stage": "None"}),
            ],
        )
    assert [e.seq for e in events] == [2, 3]
    assert [e.prev_hash for e in events] == [first.hash, events[0].hash]
    assert audit.verify().ok and audit.head() == (3, events[1].hash)
