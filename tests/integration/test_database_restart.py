"""PostgreSQL restarted while the service is quiet: the next requests find dead pooled
connections and must not fail because of them."""

from __future__ import annotations

import threading
import time

from sqlalchemy import text

from registry_service.db.database import ALIVE_WITHIN, Database
from registry_service.db.migrate import upgrade
from registry_service.services.audit import AuditLog
from registry_service.services.context import Context
from tests.rig import Postgres, create_database

CTX = Context(actor="tester", request_id="r-1")


def test_connections_dropped_by_a_restart_are_replaced_unseen():
    pg = Postgres.start()
    try:
        url = create_database(pg.url, "restart")
        upgrade(url)
        db = Database(url)
        log = AuditLog(db)
        # Three pooled connections, all about to die.
        barrier = threading.Barrier(3)

        def hold_one() -> None:
            with db.read() as session:
                session.execute(text("SELECT 1"))
                barrier.wait(timeout=10)

        holders = [threading.Thread(target=hold_one) for _ in range(3)]
        for t in holders:
            t.start()
        for t in holders:
            t.join()
        assert db.engine.pool.checkedin() == 3

        pg.restart()
        time.sleep(ALIVE_WITHIN + 0.2)
        events = [
            log.record(CTX, "model.updated", model_name="m", after={"i": i}) for i in range(4)
        ]
        assert [e.seq for e in events] == [1, 2, 3, 4]
        assert log.verify().ok
        db.dispose()
    finally:
        pg.stop()
