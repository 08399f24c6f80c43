"""Folding predictions and feedback into their per-minute rollup rows.

Runs inside the caller's transaction. Rows are locked in key order so that writers in
several processes folding overlapping minutes never deadlock.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from registry_service.db.models import PredictionRollupRow
from registry_service.monitoring.rollup import (
    ServedBatch,
    empty_feedback,
    empty_served,
    merge_feedback,
    merge_samples,
    merge_served,
    minute_of,
)

Key = tuple[str, datetime, int, str]  # model, minute, version, variant
HOUR = 60


def rollup_key(name: str, version: int | None, variant: str | None, at: datetime) -> Key:
    return (name, minute_of(at), version or 0, variant or "")


def hour_key(key: Key) -> Key:
    name, minute, version, variant = key
    return (name, minute.replace(minute=0), version, variant)


def _locked_row(session: Session, span: int, key: Key) -> PredictionRollupRow:
    name, minute, version, variant = key
    values = {
        "model_name": name,
        "span": span,
        "minute": minute,
        "model_version": version,
        "variant": variant,
        "served": empty_served(),
        "feedback": empty_feedback(),
        "sample": [],
    }
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    session.execute(
        dialect.insert(PredictionRollupRow)
        .values(**values)
        .on_conflict_do_nothing(
            index_elements=["model_name", "span", "minute", "model_version", "variant"]
        )
    )
    return session.execute(
        select(PredictionRollupRow)
        .where(
            PredictionRollupRow.model_name == name,
            PredictionRollupRow.span == span,
            PredictionRollupRow.minute == minute,
            PredictionRollupRow.model_version == version,
            PredictionRollupRow.variant == variant,
        )
        .with_for_update()
    ).scalar_one()


def fold_served(
    session: Session,
    records: Iterable[tuple[Key, str, bool, float, list[dict], Any]],
    sample_size: int,
    rng: random.Random,
) -> None:
    """records: (key, status, fallback, latency_ms, input rows, outputs). Each goes into
    its minute's row and its hour's row; only minute rows keep input samples."""
    minutes: dict[Key, ServedBatch] = {}
    hours: dict[Key, ServedBatch] = {}
    for key, status, fallback, latency_ms, rows, outputs in records:
        for batches, k, size in ((minutes, key, sample_size), (hours, hour_key(key), 0)):
            batch = batches.get(k)
            if batch is None:
                batch = batches[k] = ServedBatch(size, rng)
            batch.add(status, fallback, latency_ms, rows, outputs)
    # Every writer locks minute rows, then hour rows, each in key order: no deadlock.
    for span, batches in ((1, minutes), (HOUR, hours)):
        for key in sorted(batches):
            row = _locked_row(session, span, key)
            batch = batches[key]
            if batch.sample:
                row.sample = merge_samples(
                    (row.sample or [], row.served.get("seen", 0)),
                    (batch.sample, batch.doc["seen"]),
                    sample_size,
                    rng,
                )
            row.served = merge_served(row.served, batch.document())


def fold_feedback(session: Session, deltas: dict[Key, list[dict[str, Any]]]) -> None:
    hours: dict[Key, list[dict[str, Any]]] = {}
    for key, items in deltas.items():
        hours.setdefault(hour_key(key), []).extend(items)
    for span, grouped in ((1, deltas), (HOUR, hours)):
        for key in sorted(grouped):
            row = _locked_row(session, span, key)
            merged = row.feedback
            for delta in grouped[key]:
                merged = merge_feedback(merged, delta)
            row.feedback = merged
