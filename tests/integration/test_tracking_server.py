"""The tracker against a real `mlflow server`, and registration of what it logged."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from registry_service.sdk.tracking import GIT_COMMIT_TAG, Tracker
from registry_service.services.context import Context
from tests.conftest import get_services_of

ROOT = Path(__file__).resolve().parents[2]
HTTP_SETTINGS = (
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_POOL_MAXSIZE",
)


def test_search_over_http_registers_the_best_child_with_its_commit(
    app, mlflow_uri, model_name, monkeypatch
):
    for name in HTTP_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    tracker = Tracker(f"server-search-{uuid.uuid4().hex[:8]}", tracking_uri=mlflow_uri)
    # A training process keeps MLflow's own upload timeouts and retries.
    assert not any(name in os.environ for name in HTTP_SETTINGS)

    features, labels = [[0.0], [1.0], [2.0], [3.0], [4.0], [5.0]], [0, 0, 0, 1, 1, 1]
    with tracker.start_run("search") as search:
        for c in (0.01, 1.0, 100.0):
            with search.child(f"C={c}") as trial:
                model = LogisticRegression(C=c).fit(features, labels)
                trial.log_params({"model": {"C": c}})
                trial.log_metric("log_loss", log_loss(labels, model.predict_proba(features)))
                trial.log_model(model, "model", pip_requirements=["scikit-learn"])
    best = tracker.best_run(
        "log_loss", higher_is_better=False, filter=f"tags.mlflow.parentRunId = '{search.run_id}'"
    )
    assert best.params["model.C"] == "100.0"  # weakest regularisation fits these points best

    services = get_services_of(app)
    ctx = Context(actor="trainer")
    services.models.create_model(ctx, model_name, None, {})
    detail = services.models.register_version(ctx, model_name, best.run_id, "model", None, {})
    assert detail.version.run_id == best.run_id
    assert detail.version.model_id  # the MLflow 3 logged model, found over HTTP
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    expected = head.stdout.strip() if head.returncode == 0 else None
    assert best.tags.get(GIT_COMMIT_TAG) == expected
    assert detail.lineage.git_commit == expected


@pytest.fixture(autouse=True)
def _source_is_this_repository(monkeypatch):
    # Provenance is taken from the training script's folder; under pytest that is
    # pytest's own, so point it at this repository.
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr("registry_service.sdk.tracking._default_source_dir", lambda: ROOT)
