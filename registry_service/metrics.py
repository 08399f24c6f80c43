"""Prometheus metrics: HTTP, predictions, the model cache, what each target serves.

Under gunicorn, ``registry-service serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` before the
workers start, so every worker writes its samples there and ``GET /metrics`` (answered by
whichever worker) adds them all up. Without it (tests, a single process) each app keeps
its own registry.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Single-row predictions take milliseconds; loads take up to seconds.
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_requests = Histogram(
            "registry_http_request_duration_seconds",
            "HTTP requests by route template, method and status",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predictions = Histogram(
            "registry_prediction_duration_seconds",
            "Predictions by model, version, variant and outcome (ok, invalid, error)",
            ["model", "version", "variant", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.fallbacks = Counter(
            "registry_prediction_fallbacks",
            "Predictions answered by the previous holder, by the version that failed",
            ["model", "version"],
            registry=r,
        )
        self.model_loads = Histogram(
            "registry_model_load_duration_seconds",
            "Model loads (download and load) by outcome",
            ["model", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.loaded_models = Gauge(
            "registry_loaded_models",
            "Models held in serving caches (summed over live processes)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.serving_version = Gauge(
            "registry_serving_version",
            "The version that serves each model's target now",
            ["model", "target"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.log_dropped = Counter(
            "registry_prediction_log_dropped",
            "Prediction records dropped because the log queue was full",
            registry=r,
        )

    def render(self) -> tuple[bytes, dict[str, Any]]:
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        else:
            registry = self.registry
        return generate_latest(registry), {"Content-Type": CONTENT_TYPE_LATEST}


def mark_process_dead(pid: int) -> None:
    """Drop a finished worker's live gauges (gunicorn's child_exit hook)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)
