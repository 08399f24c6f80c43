"""Prometheus metrics: HTTP, predictions, the model cache, what each target serves.

Under gunicorn, ``registry-service serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` before the
workers start, so every worker writes its samples there and ``GET /metrics`` (answered by
whichever worker) adds them all up. Without it (tests, a single process) each app keeps
its own registry.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
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
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

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

    def render(self, state: Collector | None = None) -> tuple[bytes, dict[str, Any]]:
        """The process (or all workers') samples, then ``state``: gauges read at scrape
        time from the database and MLflow, the same whichever worker answers."""
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        else:
            registry = self.registry
        body = generate_latest(registry)
        if state is not None:
            extra = CollectorRegistry()
            extra.register(state)
            body += generate_latest(extra)
        return body, {"Content-Type": CONTENT_TYPE_LATEST}


class StateCollector(Collector):
    """Gauges of shared state: reachability, promotion requests, the audit chain, alerts
    and the latest drift per version. ``read`` returns what monitoring.gauges() does;
    ``ping_mlflow`` and ``ping_db`` raise when down. MLflow's answer is kept a few
    seconds so that frequent scrapes do not become MLflow load."""

    def __init__(
        self,
        read: Callable[[], dict[str, Any]],
        ping_db: Callable[[], None],
        ping_mlflow: Callable[[], None],
        mlflow_ttl: float = 10.0,
    ) -> None:
        self.read = read
        self.ping_db = ping_db
        self.ping_mlflow = ping_mlflow
        self.mlflow_ttl = mlflow_ttl
        self._mlflow: tuple[float, int] | None = None

    def _up(self, ping: Callable[[], None]) -> int:
        try:
            ping()
            return 1
        except Exception:  # any failure to answer is "down" to a scraper
            return 0

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = time.monotonic()
        if self._mlflow is None or now - self._mlflow[0] > self.mlflow_ttl:
            self._mlflow = (now, self._up(self.ping_mlflow))
        yield GaugeMetricFamily("registry_mlflow_up", "MLflow answers", value=self._mlflow[1])
        db_up = self._up(self.ping_db)
        yield GaugeMetricFamily("registry_database_up", "Our database answers", value=db_up)
        if not db_up:
            return
        try:
            state = self.read()
        except Exception:
            log.exception("could not read the state gauges")
            return
        promotions = GaugeMetricFamily(
            "registry_promotion_requests", "Promotion requests by status", labels=["status"]
        )
        for status, count in sorted(state["promotions"].items()):
            promotions.add_metric([status], count)
        yield promotions
        yield GaugeMetricFamily(
            "registry_audit_chain_length", "Events in the audit chain", value=state["chain"]
        )
        firing = GaugeMetricFamily(
            "registry_alerts_firing", "Alerts firing, by model and rule", labels=["model", "rule"]
        )
        for model, rule in state["firing"]:
            firing.add_metric([model, rule], 1)
        yield firing
        psi = GaugeMetricFamily(
            "registry_drift_psi",
            "PSI of the latest drift evaluation, by feature (__prediction__: predictions)",
            labels=["model", "version", "feature"],
        )
        detected = GaugeMetricFamily(
            "registry_drift_detected",
            "The latest drift verdict per version (1: drift)",
            labels=["model", "version"],
        )
        for model, version, report in state["drift"]:
            detected.add_metric([model, str(version)], int(bool(report.get("drift"))))
            for feature, value in sorted((report.get("psi") or {}).items()):
                if value is not None:
                    psi.add_metric([model, str(version), feature], value)
        yield psi
        yield detected


def mark_process_dead(pid: int) -> None:
    """Drop a finished worker's live gauges (gunicorn's child_exit hook)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)
