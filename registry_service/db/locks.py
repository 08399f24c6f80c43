"""Named locks shared by every process of the service, held across MLflow calls.

PostgreSQL: session advisory locks on a dedicated connection; they die with the
connection, so a crashed worker never leaves a target locked. SQLite (the embedded
default, one machine): ``flock`` on a file per name, released by the kernel when the
process dies.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from registry_service.db.database import Database
from registry_service.errors import ServiceUnavailable


class LockBusy(ServiceUnavailable):
    code = "busy"
    title = "Another execution holds this target"


def lock_key(name: str) -> int:
    """A stable signed 64-bit key, as pg_advisory_lock takes."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big", signed=True)


class NamedLocks:
    def __init__(self, db: Database, timeout: float = 30.0) -> None:
        self.db = db
        self.timeout = timeout
        self._local = threading.Lock()
        self._dir: Path | None = None
        if db.dialect == "sqlite":
            database = db.engine.url.database
            if database and database != ":memory:":
                self._dir = Path(database).resolve().parent / "locks"

    @contextmanager
    def hold(self, name: str) -> Iterator[None]:
        if self.db.dialect == "postgresql":
            with self._advisory(name):
                yield
        elif self._dir is not None:
            with self._flock(name):
                yield
        else:
            with self._thread_lock():
                yield

    def _busy(self, name: str) -> LockBusy:
        return LockBusy(
            f"another execution on {name} held its lock for over {self.timeout:.0f}s; "
            "nothing was changed, try again"
        )

    @contextmanager
    def _advisory(self, name: str) -> Iterator[None]:
        key = lock_key(name)
        conn = self.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            try:
                conn.execute(text(f"SET lock_timeout = '{int(self.timeout * 1000)}ms'"))
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            except DBAPIError as exc:
                conn.invalidate()
                raise self._busy(name) from exc
            try:
                yield
            finally:
                try:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                except DBAPIError:
                    # Closing the connection for good releases the lock server-side.
                    conn.invalidate()
        finally:
            conn.close()

    @contextmanager
    def _flock(self, name: str) -> Iterator[None]:
        assert self._dir is not None
        self._dir.mkdir(parents=True, exist_ok=True)
        path = self._dir / (hashlib.sha256(name.encode("utf-8")).hexdigest()[:32] + ".lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + self.timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError as exc:
                    if time.monotonic() >= deadline:
                        raise self._busy(name) from exc
                    time.sleep(0.01)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @contextmanager
    def _thread_lock(self) -> Iterator[None]:
        # In-memory SQLite lives in one process; one lock for all names is enough.
        if not self._local.acquire(timeout=self.timeout):
            raise self._busy("the database")
        try:
            yield
        finally:
            self._local.release()
