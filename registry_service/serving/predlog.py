"""The prediction log: records queued by requests, written in batches by one thread.

A prediction never waits on the database: when the queue is full the record is dropped
and counted. Each batch is folded into the per-minute rollups in the same transaction,
so the monitoring figures never disagree with the raw log.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import insert

from registry_service.db.database import Database, dumps_json
from registry_service.db.models import PredictionRow
from registry_service.monitoring.rollup import ROWS_PER_REQUEST
from registry_service.monitoring.store import fold_served, rollup_key
from registry_service.serving.payload import rows_of

log = logging.getLogger(__name__)


@dataclass
class PredictionRecord:
    request_id: str
    model_name: str
    model_version: int | None
    variant: str | None
    subject_hash: str | None
    principal: str
    status: str
    fallback: bool
    latency_ms: float
    inputs: Any
    outputs: Any
    created_at: datetime
    client_request_id: str | None = None  # the caller's X-Request-ID; request_id is ours


def capped(value: Any, limit: int) -> Any:
    """``value`` if its JSON fits in ``limit`` bytes, else a note of its size."""
    try:
        text = dumps_json(value)
    except (TypeError, ValueError):
        return {"unrecorded": "not JSON-serialisable"}
    if len(text) <= limit:
        return value  # the column serialises it the same way
    return {"truncated": True, "bytes": len(text)}


class PredictionLogWriter:
    def __init__(
        self,
        db: Database,
        max_queue: int = 10_000,
        batch_size: int = 500,
        flush_seconds: float = 1.0,
        field_bytes: int = 16 * 1024,
        dropped: Any = None,
        sample_size: int = 50,
        enabled: bool = True,
    ) -> None:
        """``dropped``: a counter (Prometheus) to count dropped records in, too.
        ``sample_size``: input rows kept per model version, variant and minute for drift."""
        self.db = db
        self.enabled = enabled
        self.sample_size = sample_size
        self._rng = random.Random()
        self.field_bytes = field_bytes
        self._dropped_counter = dropped
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self._queue: queue.Queue[PredictionRecord] = queue.Queue(max_queue)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._stopping = threading.Event()
        self._idle = threading.Condition()
        self._pending = 0
        self.written = 0
        self.dropped = 0
        self.failed = 0

    def submit(self, record: PredictionRecord) -> None:
        if not self.enabled:
            return
        self._ensure_started()
        try:
            with self._idle:
                self._pending += 1
            self._queue.put_nowait(record)
        except queue.Full:
            with self._idle:
                self._pending -= 1
            self.dropped += 1
            if self._dropped_counter is not None:
                self._dropped_counter.inc()

    def _ensure_started(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._stopping.clear()
                self._thread = threading.Thread(
                    target=self._run, name="prediction-log", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while not (self._stopping.is_set() and self._queue.empty()):
            batch: list[PredictionRecord] = []
            try:
                # Short waits so that close() is never held up by an idle wait.
                batch.append(self._queue.get(timeout=0.25))
                # Then gather for up to flush_seconds: one transaction (and one fold
                # into each rollup row) per second rather than one per record.
                deadline = time.monotonic() + self.flush_seconds
                while len(batch) < self.batch_size:
                    left = deadline - time.monotonic()
                    if left <= 0 or self._stopping.is_set():
                        batch.append(self._queue.get_nowait())
                    else:
                        batch.append(self._queue.get(timeout=min(left, 0.25)))
            except queue.Empty:
                pass
            if batch:
                self._write(batch)

    def _write(self, batch: list[PredictionRecord]) -> None:
        try:
            with self.db.transaction() as session:
                session.execute(insert(PredictionRow), [self._row(r) for r in batch])
                fold_served(
                    session,
                    (
                        (
                            rollup_key(r.model_name, r.model_version, r.variant, r.created_at),
                            r.status,
                            r.fallback,
                            r.latency_ms,
                            rows_of(r.inputs, ROWS_PER_REQUEST) if r.status == "ok" else [],
                            r.outputs,
                        )
                        for r in batch
                    ),
                    self.sample_size,
                    self._rng,
                )
            self.written += len(batch)
        except Exception:  # the log must not stop on a database outage; counted instead
            self.failed += len(batch)
            log.exception("could not write %d prediction records", len(batch))
        finally:
            with self._idle:
                self._pending -= len(batch)
                self._idle.notify_all()

    def _row(self, record: PredictionRecord) -> dict[str, Any]:
        # Sized here, off the request path: requests only hand over references.
        row = {f.name: getattr(record, f.name) for f in fields(record)}
        row["inputs"] = capped(record.inputs, self.field_bytes)
        if record.outputs is not None:
            row["outputs"] = capped(record.outputs, self.field_bytes)
        return row

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every submitted record is written (or failed); True if so."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending <= 0, timeout)

    def close(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        self.flush(timeout)
        self._stopping.set()
        self._thread.join(timeout)
