"""Fixtures of the integration tests: the service as its users reach it, over HTTP."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.rig import ServiceProcess

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def live_server(registry_db_url, mlflow_uri, tmp_path_factory):
    """`registry-service serve` (gunicorn, two workers) on the suite's PostgreSQL and
    `mlflow server`; a test may stop and start it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "MLFLOW_"))}
    env.update(
        REGISTRY_DATABASE_URL=registry_db_url,
        MLFLOW_TRACKING_URI=mlflow_uri,
        REGISTRY_DATA_DIR=str(tmp_path_factory.mktemp("data")),
        # The suite's shared database holds requests tests leave approved or overdue on
        # purpose; test_scheduler runs the scheduler on a database of its own.
        REGISTRY_SCHEDULER="0",
    )
    log = tmp_path_factory.mktemp("logs") / "service.log"
    service = ServiceProcess(env, log, ROOT, extra_args=("--workers", "2")).start()
    yield service
    service.stop()
