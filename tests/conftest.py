"""Fixtures shared by the suite: real PostgreSQL, a real `mlflow server`, the app."""

from __future__ import annotations

import os
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sqlalchemy import select, update

from registry_service.app import create_app
from registry_service.db.base import utcnow
from registry_service.db.database import Database
from registry_service.db.migrate import upgrade
from registry_service.db.models import AuditEventRow, PromotionRequestRow
from registry_service.services.audit import AuditLog
from registry_service.services.container import get_services
from registry_service.services.context import Context
from registry_service.services.tokens import TokenService
from tests.rig import MlflowServer, Postgres, create_database
from tests.serving_models import log_sklearn

ROLES = ("viewer", "requester", "approver", "admin")


@pytest.fixture(scope="session")
def pg_server_url():
    url = os.environ.get("REGISTRY_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    server = Postgres.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mlflow_db_url(pg_server_url) -> str:
    """The backend database of the suite's `mlflow server` (direct-store tests read it)."""
    if os.environ.get("REGISTRY_TEST_MLFLOW_URI"):
        url = os.environ.get("REGISTRY_TEST_MLFLOW_DB_URL")
        if not url:
            pytest.fail("with REGISTRY_TEST_MLFLOW_URI, set REGISTRY_TEST_MLFLOW_DB_URL too")
        return url
    return create_database(pg_server_url, "mlflow")


@pytest.fixture(scope="session")
def mlflow_uri(mlflow_db_url):
    uri = os.environ.get("REGISTRY_TEST_MLFLOW_URI")
    if uri:
        yield uri
        return
    server = MlflowServer.start(mlflow_db_url)
    try:
        yield server.uri
    finally:
        server.stop()


@pytest.fixture(scope="session")
def registry_db_url(pg_server_url):
    url = create_database(pg_server_url, "registry")
    upgrade(url)
    return url


@pytest.fixture
def app(registry_db_url, mlflow_uri):
    app = create_app(
        {
            "database_url": registry_db_url,
            "mlflow_tracking_uri": mlflow_uri,
            "mlflow_registry_uri": mlflow_uri,
            "testing": True,
            # Enough sampled rows per minute for drift tests to see a distribution.
            "monitoring_sample_rows": 400,
            "webhook_allow_networks": ("127.0.0.0/8",),
        }
    )
    yield app
    get_services_of(app).close()


@pytest.fixture
def client(app):
    return app.test_client()


def stall_and_sweep(services, request_id):
    """Age the request past the stall cutoff, then run the promotions sweep."""
    with services.db.transaction() as session:
        session.execute(
            update(PromotionRequestRow)
            .where(PromotionRequestRow.id == request_id)
            .values(updated_at=utcnow() - timedelta(minutes=5))
        )
    return services.promotions.sweep(Context(actor="test-sweep"))


def promote(client, auth, model, version, approvers=("approver", "approver2"), **target):
    """Request ``target`` (Production by default) for a version as the requester and
    approve it with ``approvers`` in turn until it executes; the request's id."""
    created = client.post(
        "/api/v1/promotions",
        headers=auth("requester"),
        json={
            "model_name": model,
            "version": version,
            "reason": "serve it",
            **(target or {"target_stage": "Production"}),
        },
    )
    assert created.status_code == 201, created.json
    for approver in approvers:
        done = client.post(
            f"/api/v1/promotions/{created.json['id']}/approve", headers=auth(approver), json={}
        )
        if done.json.get("status") == "executed":
            break
    assert done.json["status"] == "executed", done.json
    return created.json["id"]


def serve_two_versions(client, auth, services, name, mlflow_client, **second_target):
    """Make ``name`` with v1 (a > 0.5) in Production and v2 (a > 0.2) registered, and
    promoted to ``second_target`` when given; the estimators by version."""
    services.models.create_model(Context(actor="test-setup"), name, None, {})
    estimators = {}
    for version, threshold in ((1, 0.5), (2, 0.2)):
        run_id, estimators[version] = log_sklearn(mlflow_client, threshold)
        services.models.register_version(
            Context(actor="test-setup"), name, run_id, "model", None, {}
        )
    promote(client, auth, name, 1)
    if second_target:
        promote(client, auth, name, 2, **second_target)
    services.serving.refresh(name)
    return estimators


def audit_rows(services, model, action) -> list[AuditEventRow]:
    """The model's audit events of one action, as stored, oldest first."""
    with services.db.read() as session:
        return list(
            session.execute(
                select(AuditEventRow)
                .where(AuditEventRow.model_name == model, AuditEventRow.action == action)
                .order_by(AuditEventRow.seq)
            ).scalars()
        )


def predict(client, auth, model, body, role="viewer", query="", headers=None):
    return client.post(
        f"/api/v1/models/{model}/predict{query}",
        headers={**auth(role), **(headers or {})},
        json=body,
    )


def expected(estimator, rows) -> list[int]:
    """What a scikit-learn estimator predicts for ``rows`` (records)."""
    return [int(p) for p in estimator.predict(pd.DataFrame(rows))]


def approve_change(client, auth, answer, approvers=("approver2", "admin")):
    """Approve the traffic change request a 202 ``answer`` opened, once per role in
    ``approvers`` (by default two: Production's quorum); the last approval's answer."""
    assert answer.status_code == 202, answer.json
    for role in approvers:
        done = client.post(
            f"/api/v1/promotions/{answer.json['id']}/approve", headers=auth(role), json={}
        )
        assert done.status_code == 200, done.json
    return done


def apply_deployment(client, auth, name, spec, approvers=("approver2", "admin")):
    """Set ``name``'s deployment to ``spec`` as an approver does (with the current ETag):
    a change that moves traffic is approved by ``approvers`` until it executes. Returns
    the deployment as GET shows it then."""
    url = f"/api/v1/models/{name}/deployment"
    etag = client.get(url, headers=auth()).headers["ETag"]
    put = client.put(url, headers={**auth("approver"), "If-Match": etag}, json=spec)
    if put.status_code != 200:
        done = approve_change(client, auth, put, approvers)
        assert done.json["status"] == "executed", done.json
    return client.get(url, headers=auth())


def get_services_of(app):
    with app.app_context():
        return get_services()


@pytest.fixture
def services(app):
    return get_services_of(app)


@pytest.fixture
def db(app) -> Database:
    return get_services_of(app).db


@pytest.fixture(scope="session")
def identities(registry_db_url) -> dict[str, dict[str, str]]:
    """A token per role, plus a second approver and a revoked admin, unique to this run."""
    database = Database(registry_db_url)
    service = TokenService(database, AuditLog(database))
    ctx = Context(actor="test-setup")
    suffix = uuid.uuid4().hex[:6]
    wanted = {role: [role] for role in ROLES} | {
        "approver2": ["approver"],
        "revoked": ["admin"],
        "predictor_only": ["predictor"],
    }
    issued = {}
    for key, roles in wanted.items():
        secret, info = service.create(ctx, f"{key}-{suffix}", roles)
        issued[key] = {"token": secret, "name": info.principal, "id": info.id}
    service.revoke(ctx, issued["revoked"]["id"])
    database.dispose()
    return issued


@pytest.fixture
def auth(identities):
    def headers(role: str = "viewer") -> dict[str, str]:
        return {"Authorization": f"Bearer {identities[role]['token']}"}

    return headers


@pytest.fixture(scope="session")
def mlflow_client(mlflow_uri) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)


@pytest.fixture
def model_name(request) -> str:
    base = request.node.name.split("[")[0].replace("test_", "")[:40]
    return f"{base}-{uuid.uuid4().hex[:8]}"


def write_model_dir(root: Path) -> Path:
    """A minimal MLmodel folder, as MLflow 2-style flavors log it under a run."""
    model_dir = root / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "MLmodel").write_text("artifact_path: model\nflavors: {}\n")
    return model_dir


@pytest.fixture
def make_run(mlflow_client):
    """Create a finished run with params, metrics, tags and a model folder."""

    def make(
        params=None,
        metrics=None,
        tags=None,
        log_model=True,
        status="FINISHED",
        experiment="registry-tests",
    ):
        exp = mlflow_client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else mlflow_client.create_experiment(experiment)
        run = mlflow_client.create_run(exp_id, tags=tags or {})
        run_id = run.info.run_id
        for key, value in (params or {}).items():
            mlflow_client.log_param(run_id, key, value)
        for key, value in (metrics or {}).items():
            mlflow_client.log_metric(run_id, key, value)
        if log_model:
            with tempfile.TemporaryDirectory() as tmp:
                mlflow_client.log_artifacts(run_id, str(write_model_dir(Path(tmp))), "model")
        mlflow_client.set_terminated(run_id, status)
        return run_id

    return make
