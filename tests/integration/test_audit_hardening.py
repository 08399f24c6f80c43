"""The database keeps the audit log append-only; verify finds rows altered behind our back."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from registry_service.db.database import Database
from registry_service.db.migrate import upgrade
from registry_service.services.audit import AuditLog
from registry_service.services.context import Context
from tests.rig import create_database

CTX = Context(actor="auditor", request_id="r-1")


@pytest.fixture
def audit_db(pg_server_url):
    """A database of its own: these tests break the chain on purpose."""
    url = create_database(pg_server_url, "audit")
    upgrade(url)
    db = Database(url)
    log = AuditLog(db)
    for i in range(5):
        log.record(CTX, "model.updated", model_name="m", after={"i": i}, subject=f"s:{i}")
    yield db, log
    db.dispose()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET actor = 'mallory' WHERE seq = 2",
        "DELETE FROM audit_events WHERE seq = 5",
        "TRUNCATE audit_events",
    ],
)
def test_database_refuses_to_rewrite_history(audit_db, statement):
    db, log = audit_db
    with pytest.raises(DBAPIError) as refused, db.engine.begin() as conn:
        conn.execute(text(statement))
    assert "append-only" in str(refused.value.orig)
    assert log.verify().ok and log.verify().events_checked == 5


def test_verify_finds_the_first_altered_or_missing_event(audit_db):
    db, log = audit_db
    clean = log.verify()
    assert (clean.ok, clean.events_checked, clean.head_seq) == (True, 5, 5)

    # A superuser can switch triggers off; the hashes still give it away.
    with db.engine.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text("UPDATE audit_events SET actor = 'mallory' WHERE seq = 3"))
    altered = log.verify()
    assert (altered.ok, altered.first_broken_seq) == (False, 3)
    assert "no longer matches" in altered.problem

    with db.engine.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text("UPDATE audit_events SET actor = 'auditor' WHERE seq = 3"))
        conn.execute(text("DELETE FROM audit_events WHERE seq = 4"))
    missing = log.verify()
    assert (missing.ok, missing.first_broken_seq) == (False, 4)
    assert "missing" in missing.problem


def test_events_stored_in_an_earlier_json_form_still_verify(audit_db):
    """Rows written before JSON was stored canonically keep json.dumps' spacing and
    escapes; they verify through a re-encoding, and an altered value is still found."""
    db, log = audit_db
    log.record(CTX, "model.updated", model_name="m", after={"b": "é", "a": [1, 2.5]})
    with db.engine.begin() as conn:
        assert conn.execute(
            text("SELECT after::text FROM audit_events WHERE seq = 6")
        ).scalar() == ('{"a":[1,2.5],"b":"é"}')
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(
            text("""UPDATE audit_events SET after = '{"b": "\\u00e9", "a": [1, 2.5]}'
                    WHERE seq = 6""")
        )
    result = log.verify()
    assert (result.ok, result.events_checked) == (True, 6)
    with db.engine.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(
            text("""UPDATE audit_events SET after = '{"b": "\\u00e9", "a": [1, 2.6]}'
                    WHERE seq = 6""")
        )
    result = log.verify(workers=2)
    assert (result.ok, result.first_broken_seq) == (False, 6)


def test_concurrent_appends_chain_in_one_order_with_their_side_rows(audit_db):
    """Eight writers at once, with serving changes and a webhook: one chain, every
    event owed to the webhook once, each model's generation at its last serving change."""
    from registry_service.db.models import ModelChangeRow, WebhookDeliveryRow
    from registry_service.integrations.webhooks import WebhookService

    db, log = audit_db
    WebhookService(db, log, public_url="http://registry.example").create(
        CTX, "https://hooks.example/a", ["alias.*"]
    )

    def write(n: int) -> None:
        ctx = Context(actor=f"writer-{n}", request_id=f"r-{n}")
        for i in range(25):
            action = "alias.set" if i % 5 == 0 else "model.updated"
            log.record(ctx, action, model_name=f"m{n}", after={"i": i})

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = log.verify()
    assert (result.ok, result.head_seq) == (True, 5 + 1 + 200)
    with db.read() as session:
        owed = session.execute(select(WebhookDeliveryRow.event_seq)).scalars().all()
        alias_events = session.execute(
            text("SELECT seq, model_name FROM audit_events WHERE action = 'alias.set'")
        ).all()
        generations = dict(
            session.execute(select(ModelChangeRow.model_name, ModelChangeRow.generation)).all()
        )
    assert sorted(owed) == sorted(seq for seq, _ in alias_events)
    assert len(owed) == 40
    # Times are taken under the chain lock: they follow the chain's order.
    with db.read() as session:
        times = session.execute(text("SELECT occurred_at FROM audit_events ORDER BY seq")).all()
    assert [t for (t,) in times] == sorted(t for (t,) in times)
    last = {}
    for seq, model in alias_events:
        last[model] = max(seq, last.get(model, 0))
    assert generations == last


def test_a_thread_queued_behind_its_process_goes_to_the_database_after_a_bound(
    audit_db, monkeypatch
):
    """The in-process queue never holds an append for long: a thread kept waiting
    behind its process (which may be waiting on a row it holds) queues in PostgreSQL,
    where a real deadlock is seen and broken."""
    import registry_service.services.audit as audit_module

    _db, log = audit_db
    monkeypatch.setattr(audit_module, "QUEUE_AT_MOST", 0.2)
    log._gate.acquire()  # another thread of this process, stuck in the queue's place
    try:
        started = time.monotonic()
        event = log.record(CTX, "model.updated", model_name="m")
        waited = time.monotonic() - started
    finally:
        log._gate.release()
    assert event.seq == 6
    assert 0.2 <= waited < 2.0


def test_the_database_hashes_the_text_verification_rebuilds(audit_db, monkeypatch):
    """An append has PostgreSQL take the hash of the text we built, and verification
    rebuilds that text from the stored row: strings with quotes, backslashes, control
    characters and non-ASCII, and JSON as stored, must come back to the very same text,
    with no event needing the re-encoding kept for JSON stored before it was canonical."""
    import registry_service.services.audit as audit_module

    _db, log = audit_db
    tricky = ['q"uote', "back\\slash", "tab\there\nnew\rline", "\x01\x1f\x7f"]
    tricky += ["é 漢字 🚀", "\u2028"]
    for i, value in enumerate(tricky):
        log.record(
            Context(actor=value, request_id=value),
            "model.updated",
            model_name=value,
            model_version=i + 1,
            subject=value,
            before={value: value, "n": -1.5e-7},
            after=[value, None, True, 10**20],
        )

    def refuse(stored):
        raise AssertionError(f"an event needed the re-encoding: {stored}")

    monkeypatch.setattr(audit_module, "_recanonical", refuse)
    result = log.verify()
    assert (result.ok, result.events_checked) == (True, 5 + len(tricky))


def test_a_transaction_holding_the_chain_does_not_queue_behind_its_own_waiter(
    audit_db, monkeypatch
):
    """A transaction appends twice (as a promotion's settlement does) while another
    thread of its process waits for the chain in the database: the second append must
    not queue behind that thread, which is waiting for this very transaction."""
    import registry_service.services.audit as audit_module

    db, log = audit_db
    monkeypatch.setattr(audit_module, "QUEUE_AT_MOST", 60.0)  # a stall would show
    first_done, results = threading.Event(), {}

    def settle() -> None:
        with db.transaction() as session:
            log.append(session, CTX, "promotion.executed", model_name="m")
            first_done.set()
            time.sleep(0.5)  # the other thread is now queued in the database
            log.append(session, CTX, "version.stage_changed", model_name="m")
        results["settle"] = True

    def other() -> None:
        first_done.wait(timeout=10)
        results["other"] = log.record(CTX, "model.updated", model_name="n").seq

    threads = [threading.Thread(target=settle), threading.Thread(target=other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=15)
    assert not any(t.is_alive() for t in threads), "an append queued behind its own waiter"
    assert results == {"settle": True, "other": 8}
    assert log.verify().ok


def test_events_appended_together_chain_as_if_appended_one_by_one(audit_db):
    """A step's events go in with one statement: each links to the one before, the
    model's generation is its serving change's seq, and a webhook is owed every event;
    two serving changes in one call are appended one at a time."""
    from registry_service.db.models import ModelChangeRow, WebhookDeliveryRow
    from registry_service.integrations.webhooks import WebhookService
    from registry_service.services.audit import Entry

    db, log = audit_db
    WebhookService(db, log, public_url="http://registry.example").create(
        CTX, "https://hooks.example/a", ["promotion.*", "version.*"]
    )
    with db.transaction() as session:
        events = log.append_all(
            session,
            CTX,
            [
                Entry("promotion.executed", "m", 2, "promotion:9", after={"n": 1}),
                Entry("version.stage_changed", "m", 2, "promotion:9", {"stage": "None"}),
                Entry("promotion.commented", "m", 2, "promotion:9", after={"n": "é\x01"}),
            ],
        )
        both = log.append_all(
            session,
            CTX,
            [Entry("alias.set", "m2", 1, after={"v": 1}), Entry("alias.set", "m2", 2)],
        )
    assert [e.seq for e in events + both] == [7, 8, 9, 10, 11]
    assert [e.prev_hash for e in events[1:]] == [e.hash for e in events[:-1]]
    assert [e.occurred_at for e in events] == sorted(e.occurred_at for e in events)
    result = log.verify()
    assert (result.ok, result.head_seq) == (True, 11)
    assert log.head() == (11, both[-1].hash)
    assert [(e.seq, e.action) for e in log.trail("promotion:9")] == [
        (7, "promotion.executed"),
        (8, "version.stage_changed"),
        (9, "promotion.commented"),
    ]
    with db.read() as session:
        generations = dict(
            session.execute(select(ModelChangeRow.model_name, ModelChangeRow.generation)).all()
        )
        owed = session.execute(select(WebhookDeliveryRow.event_seq)).scalars().all()
    assert generations == {"m": 8, "m2": 11}
    assert sorted(owed) == [7, 8, 9]
