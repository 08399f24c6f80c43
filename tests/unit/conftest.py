"""Unit fixtures: SQLite for our tables, MLflow's in-process SQLite store."""

from __future__ import annotations

import pytest

from registry_service.app import create_app
from registry_service.db.database import Database
from registry_service.db.migrate import upgrade
from registry_service.services.audit import AuditLog
from registry_service.services.context import Context
from registry_service.services.tokens import TokenService


def embedded_app(tmp_path, sqlite_url, **overrides):
    """The app on the embedded default: our SQLite tables, MLflow's in-process store."""
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return create_app(
        {
            "data_dir": tmp_path,
            "database_url": sqlite_url,
            "mlflow_tracking_uri": mlflow_uri,
            "mlflow_registry_uri": mlflow_uri,
            "artifact_root": str(tmp_path / "artifacts"),
            "testing": True,
            **overrides,
        }
    )


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    upgrade(url)
    return url


@pytest.fixture
def db(sqlite_url):
    database = Database(sqlite_url)
    yield database
    database.dispose()


@pytest.fixture
def audit(db) -> AuditLog:
    return AuditLog(db)


@pytest.fixture
def token_service(db, audit) -> TokenService:
    return TokenService(db, audit)


@pytest.fixture
def ctx() -> Context:
    return Context(actor="tester", request_id="req-1")


@pytest.fixture(scope="session")
def embedded_gateway(tmp_path_factory):
    from registry_service.gateway.mlflow_gateway import MlflowGateway

    root = tmp_path_factory.mktemp("embedded-mlflow")
    return MlflowGateway(f"sqlite:///{root / 'mlflow.db'}", artifact_root=str(root / "artifacts"))
