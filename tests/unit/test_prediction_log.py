"""The prediction log writer: batched off the request path, flushed, drops counted."""

from __future__ import annotations

import json

from sqlalchemy import func, select

from registry_service.db.base import utcnow
from registry_service.db.models import PredictionRow
from registry_service.serving.predlog import PredictionLogWriter, PredictionRecord, capped


def record(i: int, inputs=None) -> PredictionRecord:
    return PredictionRecord(
        request_id=f"r{i}",
        model_name="m",
        model_version=1,
        variant="champion",
        subject_hash=None,
        principal="svc",
        status="ok",
        fallback=False,
        latency_ms=1.5,
        inputs=inputs if inputs is not None else {"x": i},
        outputs=[i],
        created_at=utcnow(),
    )


def count(db) -> int:
    with db.read() as session:
        return session.execute(select(func.count()).select_from(PredictionRow)).scalar()


def test_every_submitted_record_is_written_in_batches(db):
    writer = PredictionLogWriter(db, batch_size=50, flush_seconds=0.1)
    for i in range(230):
        writer.submit(record(i))
    assert writer.flush(10)
    assert count(db) == 230 and writer.written == 230 and writer.dropped == 0
    writer.close()


def test_a_full_queue_drops_and_counts_instead_of_waiting(db):
    writer = PredictionLogWriter(db, max_queue=5, flush_seconds=5)
    writer._ensure_started = lambda: None  # nothing drains: the queue fills up
    for i in range(12):
        writer.submit(record(i))
    assert writer.dropped == 7
    del writer._ensure_started
    writer._ensure_started()
    assert writer.flush(10)
    writer.close()
    assert count(db) == 5


def test_close_writes_what_is_queued(db):
    writer = PredictionLogWriter(db, flush_seconds=30)
    for i in range(3):
        writer.submit(record(i))
    writer.close(timeout=10)
    assert count(db) == 3


def test_large_inputs_are_recorded_by_size_only():
    assert capped({"x": 1}, 100) == {"x": 1}
    big = {"x": "y" * 500}
    assert capped(big, 100) == {"truncated": True, "bytes": len(json.dumps(big))}


def test_the_writer_caps_inputs_and_outputs(db):
    writer = PredictionLogWriter(db, field_bytes=64)
    writer.submit(record(1, inputs={"rows": list(range(100))}))
    writer.close()
    with db.read() as session:
        row = session.execute(select(PredictionRow)).scalar_one()
    assert row.inputs["truncated"] is True and row.inputs["bytes"] > 64
    assert row.outputs == [1]
