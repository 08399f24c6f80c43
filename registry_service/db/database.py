"""Engine and transactions for one application instance."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from registry_service.config import normalize_database_url
from registry_service.errors import ServiceUnavailable


def _configure_sqlite(engine: Engine) -> None:
    # pysqlite's own transaction handling defers BEGIN, which lets two writers
    # read the audit chain head and then collide; take the write lock up front.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        readonly = conn.get_execution_options().get("registry_readonly", False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def dumps_json(value: Any) -> str:
    """JSON columns: a NaN metric becomes null; PostgreSQL refuses NaN in json."""
    return json.dumps(_finite(value), allow_nan=False)


# A connection used this recently is taken as alive; one idle longer is pinged before
# it is handed out (the window HikariCP uses): a busy server makes no extra round trip
# per transaction, and a database restarted during a quiet spell costs no request.
ALIVE_WITHIN = 0.5


def _ping_idle_connections(engine: Engine, alive_within: float) -> None:
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn, record):
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn, record, _proxy):
        checked_in_at = record.info.get("checked_in_at")
        if checked_in_at is None or time.monotonic() - checked_in_at < alive_within:
            return
        try:
            dialect.do_ping(dbapi_conn)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_conn, None):
                # The pool drops this connection and hands out a new one.
                raise DisconnectionError("connection lost while idle in the pool") from exc
            raise


def build_engine(url: str, **kwargs) -> Engine:
    url = normalize_database_url(url)
    kwargs.setdefault("json_serializer", dumps_json)
    if url.startswith("sqlite"):
        engine = create_engine(url, **kwargs)
        _configure_sqlite(engine)
        return engine
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 10)
    engine = create_engine(url, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        _ping_idle_connections(engine, ALIVE_WITHIN)
    return engine


class Database:
    def __init__(self, url: str, **engine_kwargs) -> None:
        self.url = normalize_database_url(url)
        self.engine = build_engine(self.url, **engine_kwargs)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._readers = sessionmaker(
            self.engine.execution_options(registry_readonly=True), expire_on_commit=False
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A unit of work: commits on success, rolls back on any error."""
        session = self._sessions()
        try:
            with session.begin():
                yield session
        except SQLAlchemyError as exc:
            raise ServiceUnavailable(
                "the registry database could not complete the operation; nothing was saved"
            ) from exc
        finally:
            session.close()

    @contextmanager
    def read(self) -> Iterator[Session]:
        session = self._readers()
        try:
            yield session
        except SQLAlchemyError as exc:
            raise ServiceUnavailable("the registry database is unavailable") from exc
        finally:
            session.close()

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
