"""MLflow cut off in the middle of a write, through a real proxy in front of a real
`mlflow server`: every change that reaches MLflow ends with its audit event, and no
answer says "nothing changed" when something did."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlparse

import pytest
from sqlalchemy import select

from registry_service.app import create_app
from registry_service.db.models import AuditEventRow, MlflowIntentRow
from registry_service.services.context import Context
from tests.conftest import get_services_of
from tests.rig import FaultyProxy

CTX = Context(actor="test-setup")
NOW = timedelta(0)  # settle intents of any age


@pytest.fixture
def proxy(mlflow_uri):
    proxy = FaultyProxy(urlparse(mlflow_uri).port)
    yield proxy
    proxy.close()


@pytest.fixture
def cut_app(registry_db_url, proxy, monkeypatch):
    """The service, reaching MLflow only through the proxy, with no retries inside
    MLflow's client, so a dropped answer is seen at once."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    app = create_app(
        {
            "database_url": registry_db_url,
            "mlflow_tracking_uri": proxy.url,
            "mlflow_registry_uri": proxy.url,
            "testing": True,
        }
    )
    yield app
    get_services_of(app).close()


@pytest.fixture
def cut_client(cut_app):
    return cut_app.test_client()


def events(db, model, action):
    with db.read() as session:
        return list(
            session.execute(
                select(AuditEventRow).where(
                    AuditEventRow.model_name == model, AuditEventRow.action == action
                )
            ).scalars()
        )


def intents(db, model):
    with db.read() as session:
        return [
            (row.action, row.status)
            for row in session.execute(
                select(MlflowIntentRow)
                .where(MlflowIntentRow.model_name == model)
                .order_by(MlflowIntentRow.id)
            ).scalars()
        ]


def test_created_model_whose_answer_was_lost_is_recorded(
    cut_client, cut_app, auth, proxy, model_name, mlflow_client
):
    proxy.drop(1, "registered-models/create")
    response = cut_client.post(
        "/api/v1/models",
        headers=auth("requester"),
        json={"name": model_name, "tags": {"team": "growth"}},
    )
    assert proxy.dropped == 1
    assert response.status_code == 502, response.json
    assert response.json["code"] == "applied-despite-error"
    assert response.json["applied"] == "full"
    assert mlflow_client.get_registered_model(model_name).tags == {"team": "growth"}
    db = get_services_of(cut_app).db
    [created] = events(db, model_name, "model.created")
    assert created.seq == response.json["audit_seq"]
    assert created.after["tags"] == {"team": "growth"}
    assert intents(db, model_name) == [("model.created", "reconciled")]


def test_tag_patch_cut_midway_records_what_mlflow_holds(
    cut_client, cut_app, app, auth, proxy, model_name, mlflow_client
):
    get_services_of(app).models.create_model(CTX, model_name, None, {})
    tags = {f"k{i:02d}": "v" for i in range(40)}
    # MLflow's client writes a tag per call: the 20th answer is lost, the rest not sent.
    proxy.drop(1, "registered-models/set-tag", after=19)
    response = cut_client.patch(
        f"/api/v1/models/{model_name}", headers=auth("requester"), json={"tags": tags}
    )
    assert response.status_code == 502, response.json
    assert response.json["applied"] == "partial"
    held = mlflow_client.get_registered_model(model_name).tags
    assert len(held) == 20
    db = get_services_of(cut_app).db
    [updated] = events(db, model_name, "model.updated")
    assert updated.after["tags"] == held  # exactly what MLflow holds, no more
    assert updated.after["reconciled_from_intent"]
    assert intents(db, model_name)[-1] == ("model.updated", "reconciled")


def test_write_with_mlflow_gone_afterwards_is_settled_by_the_sweep(
    cut_client, cut_app, auth, proxy, model_name, mlflow_client
):
    proxy.drop(1, "registered-models/create", then_refuse=True)
    response = cut_client.post(
        "/api/v1/models", headers=auth("requester"), json={"name": model_name}
    )
    assert response.status_code == 503, response.json
    assert response.json["code"] == "outcome-unknown"
    assert "nothing was changed" not in response.json["detail"]
    services = get_services_of(cut_app)
    assert intents(services.db, model_name) == [("model.created", "pending")]
    assert events(services.db, model_name, "model.created") == []
    assert mlflow_client.get_registered_model(model_name).name == model_name  # it did happen

    # While MLflow stays unreachable, the sweep leaves it pending.
    assert services.models.settle_intents(CTX, older_than=NOW)["unknown"] >= 1
    proxy.heal()
    counts = services.models.settle_intents(CTX, older_than=NOW)
    assert counts["recorded"] >= 1
    [created] = events(services.db, model_name, "model.created")
    assert created.actor.startswith("requester-")  # the caller's, not the sweep's
    assert intents(services.db, model_name) == [("model.created", "reconciled")]


def test_refused_write_changes_nothing_and_says_so(
    cut_client, cut_app, app, auth, proxy, model_name
):
    get_services_of(app).models.create_model(CTX, model_name, None, {})
    response = cut_client.patch(
        f"/api/v1/models/{model_name}/versions/7",
        headers=auth("requester"),
        json={"description": "no such version"},
    )
    assert response.status_code == 404
    assert intents(get_services_of(cut_app).db, model_name)[-1:] == [("model.created", "applied")]


def test_registered_version_whose_answer_was_lost_keeps_its_lineage(
    cut_client, cut_app, app, auth, proxy, model_name, make_run
):
    get_services_of(app).models.create_model(CTX, model_name, None, {})
    run_id = make_run(metrics={"auc": 0.9}, tags={"data_version": "2026-10"})
    proxy.drop(1, "model-versions/create")
    response = cut_client.post(
        f"/api/v1/models/{model_name}/versions",
        headers=auth("requester"),
        json={"run_id": run_id},
    )
    assert response.status_code == 502, response.json
    assert response.json["code"] == "applied-despite-error"
    version = cut_client.get(f"/api/v1/models/{model_name}/versions/1", headers=auth()).json
    assert version["run_id"] == run_id
    assert version["lineage"]["recorded"] is True
    assert version["lineage"]["data_version"] == "2026-10"
    [registered] = events(get_services_of(cut_app).db, model_name, "version.registered")
    assert registered.model_version == 1
