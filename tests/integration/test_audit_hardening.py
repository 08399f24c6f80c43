"""The database keeps the audit log append-only; verify finds rows altered behind our back."""

from __future__ import annotations

import pytest
from sqlalchemy import text
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
