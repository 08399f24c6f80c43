"""Named locks shared by every process of the service, held across MLflow calls.

PostgreSQL: session advisory locks on a dedicated connection; they die with the
connection, so a crashed worker never leaves a target locked. SQLite (the embedded
default, one machine): ``flock`` on a file per name, released by the kernel when the
process dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from registry_service.db.database import Database
from registry_service.errors import ServiceUnavailable


class LockBusy(ServiceUnavailable):
    code = "busy"
    title = "Another execution holds this target"


def lock_key(name: str) -> int:
    """A stable signed 64-bit key, as pg_advisory_lock takes."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big", signed=True)


# One round trip: the subquery sets the session's timeout before the wait.
_ADVISORY = text(
    "SELECT pg_advisory_lock(:k) FROM (SELECT set_config('lock_timeout', :t, false)) AS timeout"
)
_TRY_ADVISORY = text("SELECT pg_try_advisory_lock(:k)")


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
    def hold(self, name: str, *, wait: bool = True) -> Iterator[None]:
        """Hold ``name``, waiting up to ``timeout`` for it; without ``wait``, raise
        ``LockBusy`` at once when it is taken (safe while holding database rows)."""
        timeout = self.timeout if wait else 0.0
        if self.db.dialect == "postgresql":
            with self._advisory(name, timeout):
                yield
        elif self._dir is not None:
            with self._flock(name, timeout):
                yield
        else:
            with self._thread_lock(timeout):
                yield

    def _busy(self, name: str, timeout: float) -> LockBusy:
        held = f"held its lock for over {timeout:.0f}s" if timeout else "holds its lock"
        return LockBusy(f"another execution on {name} {held}; nothing was changed, try again")

    @contextmanager
    def _advisory(self, name: str, timeout: float) -> Iterator[None]:
        key = lock_key(name)
        try:
            conn = self.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except SQLAlchemyError as exc:
            if timeout:
                raise
            # Not waiting means not waiting for a connection either.
            raise self._busy(name, timeout) from exc
        try:
            try:
                if timeout:
                    taken = conn.execute(_ADVISORY, {"k": key, "t": f"{int(timeout * 1000)}ms"})
                else:
                    taken = conn.execute(_TRY_ADVISORY, {"k": key})
            except DBAPIError as exc:
                conn.invalidate()
                raise self._busy(name, timeout) from exc
            if taken.scalar() is False:
                raise self._busy(name, timeout)
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
    def _flock(self, name: str, timeout: float) -> Iterator[None]:
        assert self._dir is not None
        self._dir.mkdir(parents=True, exist_ok=True)
        path = self._dir / (hashlib.sha256(name.encode("utf-8")).hexdigest()[:32] + ".lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError as exc:
                    if time.monotonic() >= deadline:
                        raise self._busy(name, timeout) from exc
                    time.sleep(0.01)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @contextmanager
    def _thread_lock(self, timeout: float) -> Iterator[None]:
        # In-memory SQLite lives in one process; one lock for all names is enough.
        if not self._local.acquire(timeout=timeout if timeout else -1, blocking=bool(timeout)):
            raise self._busy("the database", timeout)
        try:
            yield
        finally:
            self._local.release()


class Leadership:
    """Being the one process that holds ``name``: taken without waiting, kept until
    released or until the holder (its connection, or its process) dies.

    PostgreSQL: a session advisory lock on a connection kept open for the term, checked
    on every tick, so a database restart ends the term instead of leaving two leaders.
    SQLite: ``flock`` on a file, held through an open descriptor.
    """

    def __init__(self, locks: NamedLocks, name: str) -> None:
        self.locks = locks
        self.name = name
        self._conn = None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None or self._fd is not None

    def try_acquire(self) -> bool:
        if self.held:
            return True
        db = self.locks.db
        if db.dialect == "postgresql":
            conn = db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            try:
                # A half-open connection must end the term, not hang the check.
                conn.execute(text("SET statement_timeout = '5s'"))
                got = conn.execute(
                    text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key(self.name)}
                ).scalar()
            except DBAPIError:
                conn.invalidate()
                conn.close()
                return False
            if got:
                self._conn = conn
            else:
                conn.close()
        elif self.locks._dir is not None:
            self.locks._dir.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256(self.name.encode("utf-8")).hexdigest()[:32]
            fd = os.open(self.locks._dir / f"{digest}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._fd = fd
            except BlockingIOError:
                os.close(fd)
        else:  # in-memory SQLite: one process, so it leads
            self._fd = -1
        return self.held

    def still_held(self) -> bool:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1"))
            except DBAPIError:
                self._drop()
                return False
        return self.held

    def release(self) -> None:
        if self._conn is not None:
            # If this fails, closing below ends the session, and the lock with it.
            with contextlib.suppress(DBAPIError):
                self._conn.execute(
                    text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key(self.name)}
                )
        self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(DBAPIError):
                self._conn.invalidate()
                self._conn.close()
            self._conn = None
        if self._fd is not None:
            if self._fd >= 0:
                os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
