"""MLflow stops between approvals: the request fails, nothing moves, a retry finishes it."""

from __future__ import annotations

import uuid

import pytest
from mlflow.tracking import MlflowClient

from registry_service.config import Settings
from registry_service.domain.policy import Target
from registry_service.domain.promotion import Status
from registry_service.services.container import build_services
from registry_service.services.context import Context
from tests.conftest import write_model_dir
from tests.rig import MlflowServer, create_database

CTX = Context(actor="outage-test")


@pytest.fixture
def own_mlflow(pg_server_url):
    """A server of our own to stop: the session's server must stay up for others."""
    backend = create_database(pg_server_url, "mlflow_outage")
    servers = [MlflowServer.start(backend)]
    yield backend, servers
    for server in servers:
        server.stop()


def test_mlflow_down_at_execution(own_mlflow, registry_db_url, identities, tmp_path):
    backend, servers = own_mlflow
    uri = servers[0].uri
    services = build_services(
        Settings.from_env().with_overrides(
            database_url=registry_db_url,
            mlflow_tracking_uri=uri,
            mlflow_registry_uri=uri,
            mlflow_timeout=3.0,
            mlflow_max_retries=0,
        )
    )
    try:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        run = client.create_run(client.create_experiment(f"outage-{uuid.uuid4().hex[:6]}"))
        client.log_artifacts(run.info.run_id, str(write_model_dir(tmp_path)), "model")
        client.set_terminated(run.info.run_id)
        name = f"outage-{uuid.uuid4().hex[:8]}"
        services.models.create_model(CTX, name, None, {})
        services.models.register_version(CTX, name, run.info.run_id, "model", None, {})
        who = {
            k: services.tokens.authenticate(identities[k]["token"])
            for k in identities
            if k != "revoked"
        }

        opened = services.promotions.create(
            CTX, who["requester"], name, 1, Target.stage("Production"), "ship"
        )
        services.promotions.approve(CTX, who["approver"], opened.id, None)

        servers[0].stop()
        failed = services.promotions.approve(CTX, who["approver2"], opened.id, "go")
        assert failed.status is Status.FAILED
        assert "MLflow is unavailable" in failed.last_error
        actions = [e.action for e in failed.audit_trail]
        assert actions[-2:] == ["promotion.execution_started", "promotion.failed"]
        assert "promotion.executed" not in actions

        servers.append(MlflowServer.start(backend, port=int(uri.rsplit(":", 1)[1])))
        assert client.get_model_version(name, "1").current_stage == "None"

        done = services.promotions.retry(CTX, who["admin"], opened.id)
        assert done.status is Status.EXECUTED and done.attempts == 2
        assert done.outcome == {
            "from_stage": "None",
            "to_stage": "Production",
            "archived_versions": [],
            "replaced_version": None,
        }
        assert client.get_model_version(name, "1").current_stage == "Production"
        assert [e.action for e in done.audit_trail][-4:] == [
            "promotion.retried",
            "promotion.execution_started",
            "promotion.executed",
            "version.stage_changed",
        ]
    finally:
        services.close()
