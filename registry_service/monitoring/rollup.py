"""Per-minute rollups of the prediction log.

Each (model, version, variant, minute) has one row with two documents: ``served``
(requests by outcome, latency and prediction sketches, class counts) and ``feedback``
(what the ground truth says about those predictions), and a bounded uniform sample of
input rows for drift, in a column of its own so that figures never read it. The documents
merge by addition, so the log writer folds each batch in and readers add up a window
without touching raw predictions.
"""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any

from registry_service.domain.profile import category_of, is_number
from registry_service.monitoring.sketch import Sketch

MAX_CLASSES = 100
OTHER_CLASS = "__other__"
ROWS_PER_REQUEST = 20  # sampled input rows considered from one (batch) request


def minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def is_label(value: Any) -> bool:
    """A value that reads as a class: text, a boolean or an integer (never a float, which
    is a regressor's answer even when it happens to be whole)."""
    return isinstance(value, str | bool | int)


label_of = category_of


def values_of(outputs: Any) -> list[Any]:
    """One scalar per predicted row, from the shapes models answer in."""
    if isinstance(outputs, dict):
        if len(outputs) == 1:
            return values_of(next(iter(outputs.values())))
        return []
    if not isinstance(outputs, list):
        return [outputs] if _scalar(outputs) else []
    values = []
    for item in outputs:
        if isinstance(item, list) and len(item) == 1:
            item = item[0]
        elif isinstance(item, dict) and len(item) == 1:
            item = next(iter(item.values()))
        if not _scalar(item):
            return []  # probabilities or structured answers: no single value per row
        values.append(item)
    return values


def _scalar(value: Any) -> bool:
    return isinstance(value, str | bool) or is_number(value)


def empty_served() -> dict[str, Any]:
    return {
        "requests": 0,
        "ok": 0,
        "invalid": 0,
        "errors": 0,
        "fallbacks": 0,
        "rows": 0,
        "latency": {},
        "values": {},
        "classes": {},
        "seen": 0,
    }


def empty_feedback() -> dict[str, Any]:
    return {"requests": 0, "confusion": {}, "reg_n": 0, "abs": 0.0, "sq": 0.0}


class ServedBatch:
    """The served figures of one group in one batch, built from prediction records."""

    def __init__(self, sample_size: int, rng: random.Random) -> None:
        self.doc = empty_served()
        self.latency = Sketch()
        self.values = Sketch()
        self.sample_size = sample_size
        self.rng = rng
        self._reservoir: list[Any] = []

    def add(
        self, status: str, fallback: bool, latency_ms: float, rows: list[dict], outputs: Any
    ) -> None:
        doc = self.doc
        doc["requests"] += 1
        doc["fallbacks"] += int(fallback)
        if status != "ok":
            doc["invalid" if status == "invalid" else "errors"] += 1
            return
        doc["ok"] += 1
        self.latency.add(latency_ms)
        values = values_of(outputs)
        doc["rows"] += len(values)
        classes = doc["classes"]
        for value in values:
            if is_number(value):
                self.values.add(float(value))
            if is_label(value):
                label = label_of(value)
                if label not in classes and len(classes) >= MAX_CLASSES:
                    label = OTHER_CLASS
                classes[label] = classes.get(label, 0) + 1
        # rows are the request's first rows (at most ROWS_PER_REQUEST), in order.
        paired = len(values) >= len(rows)
        for i, row in enumerate(rows[:ROWS_PER_REQUEST]):
            self._offer({"x": row, "y": values[i] if paired else None})

    def _offer(self, item: Any) -> None:
        # Algorithm R: every row seen so far is equally likely to be in the sample.
        self.doc["seen"] += 1
        if not self.sample_size:
            return
        if len(self._reservoir) < self.sample_size:
            self._reservoir.append(item)
            return
        slot = self.rng.randrange(self.doc["seen"])
        if slot < self.sample_size:
            self._reservoir[slot] = item

    def document(self) -> dict[str, Any]:
        self.doc["latency"] = self.latency.to_json()
        self.doc["values"] = self.values.to_json()
        return self.doc

    @property
    def sample(self) -> list[Any]:
        return self._reservoir


def merge_served(stored: dict[str, Any], batch: dict[str, Any]) -> dict[str, Any]:
    out = dict(stored)
    for key in ("requests", "ok", "invalid", "errors", "fallbacks", "rows", "seen"):
        out[key] = stored.get(key, 0) + batch[key]
    out["latency"] = Sketch.from_json(stored.get("latency")).merge_json(batch["latency"]).to_json()
    out["values"] = Sketch.from_json(stored.get("values")).merge_json(batch["values"]).to_json()
    classes = dict(stored.get("classes") or {})
    for label, n in batch["classes"].items():
        if label not in classes and len(classes) >= MAX_CLASSES:
            label = OTHER_CLASS
        classes[label] = classes.get(label, 0) + n
    out["classes"] = classes
    return out


def merge_samples(
    a: tuple[list[Any], int], b: tuple[list[Any], int], size: int, rng: random.Random
) -> list[Any]:
    """A uniform sample of the union of two uniform samples: how many come from each side
    is drawn as a draw without replacement from all the rows the two sides saw."""
    (items_a, seen_a), (items_b, seen_b) = a, b
    if len(items_a) + len(items_b) <= size:
        return [*items_a, *items_b]
    seen_a, seen_b = max(seen_a, len(items_a)), max(seen_b, len(items_b))
    drawn = rng.sample(range(seen_a + seen_b), size)
    from_a = min(sum(1 for i in drawn if i < seen_a), len(items_a))
    from_a = max(from_a, size - len(items_b))
    return rng.sample(items_a, from_a) + rng.sample(items_b, size - from_a)


def feedback_delta(predicted: Any, actual: Any, sign: int = 1) -> dict[str, Any]:
    """What one request's ground truth adds to (sign=1) or takes from (-1) its rollup."""
    doc = empty_feedback()
    values = values_of(predicted)
    truths = actual if isinstance(actual, list) else [actual]
    if len(values) != len(truths) or not values:
        return doc
    doc["requests"] = sign
    for p, a in zip(values, truths, strict=True):
        if is_label(p) and is_label(a):
            row = doc["confusion"].setdefault(label_of(p), {})
            key = label_of(a)
            row[key] = row.get(key, 0) + sign
        elif is_number(p) and is_number(a):
            error = float(p) - float(a)
            doc["reg_n"] += sign
            doc["abs"] += sign * abs(error)
            doc["sq"] += sign * error * error
    return doc


def merge_feedback(stored: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    out = {
        "requests": (stored.get("requests") or 0) + delta["requests"],
        "reg_n": (stored.get("reg_n") or 0) + delta["reg_n"],
        "abs": (stored.get("abs") or 0.0) + delta["abs"],
        "sq": (stored.get("sq") or 0.0) + delta["sq"],
    }
    confusion = {p: dict(row) for p, row in (stored.get("confusion") or {}).items()}
    for p, row in delta["confusion"].items():
        mine = confusion.setdefault(p, {})
        for a, n in row.items():
            mine[a] = mine.get(a, 0) + n
            if not mine[a]:
                del mine[a]
        if not mine:
            del confusion[p]
    out["confusion"] = confusion
    return out


class Totals:
    """The sum of many rollup rows (one version and variant, or one time bucket)."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(("requests", "ok", "invalid", "errors", "fallbacks", "rows"), 0)
        self.latency = Sketch()
        self.values = Sketch()
        self.classes: dict[str, int] = {}
        self.feedback = empty_feedback()

    def add(self, served: dict[str, Any] | None, feedback: dict[str, Any] | None) -> None:
        if served:
            for key in self.counts:
                self.counts[key] += served.get(key, 0)
            self.latency.merge_json(served.get("latency"))
            self.values.merge_json(served.get("values"))
            for label, n in (served.get("classes") or {}).items():
                self.classes[label] = self.classes.get(label, 0) + n
        if feedback:
            self.feedback = merge_feedback(self.feedback, _as_delta(feedback))


def _as_delta(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "requests": doc.get("requests", 0),
        "reg_n": doc.get("reg_n", 0),
        "abs": doc.get("abs", 0.0),
        "sq": doc.get("sq", 0.0),
        "confusion": doc.get("confusion") or {},
    }
