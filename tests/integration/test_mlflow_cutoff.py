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
from registry_service.domain.policy import Target
from registry_service.domain.promotion import Status
from registry_service.services.context import Context
from tests.conftest import get_services_of, stall_and_sweep
from tests.rig import FaultyProxy

CTX = Context(actor="test-setup")
NOW = timedelta(0)  # settle intents of any age
ROLES_USED = ("requester", "approver", "approver2")


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


@pytest.fixture
def champion(app, model_name, make_run, identities):
    """Version 1 in Production through the registry; version 2 registered to replace it."""
    services = get_services_of(app)
    services.models.create_model(CTX, model_name, None, {})
    for _ in range(2):
        services.models.register_version(CTX, model_name, make_run(), "model", None, {})
    people = {k: services.tokens.authenticate(identities[k]["token"]) for k in ROLES_USED}
    opened = services.promotions.create(
        CTX, people["requester"], model_name, 1, Target.stage("Production"), "first"
    )
    for approver in ("approver", "approver2"):
        done = services.promotions.approve(CTX, people[approver], opened.id, None)
    assert done.status is Status.EXECUTED
    return model_name


def promote_v2_cut(cut_client, auth, proxy, model, then_refuse):
    """Version 2 to Production; the completing approval's move loses its answer."""
    opened = cut_client.post(
        "/api/v1/promotions",
        headers=auth("requester"),
        json={"model_name": model, "version": 2, "target_stage": "Production", "reason": "r"},
    )
    assert opened.status_code == 201, opened.json
    url = f"/api/v1/promotions/{opened.json['id']}/approve"
    assert cut_client.post(url, headers=auth("approver"), json={}).json["status"] == "pending"
    proxy.drop(1, "model-versions/transition-stage", then_refuse=then_refuse)
    answer = cut_client.post(url, headers=auth("approver2"), json={})
    assert proxy.dropped == 1
    return answer


def stages(mlflow_client, model):
    return {
        int(v.version): v.current_stage
        for v in mlflow_client.search_model_versions(f"name='{model}'")
    }


def test_promotion_whose_move_answer_was_lost_is_executed(
    cut_client, cut_app, auth, proxy, champion, mlflow_client
):
    answer = promote_v2_cut(cut_client, auth, proxy, champion, then_refuse=False)
    assert answer.status_code == 200, answer.json
    assert answer.json["status"] == "executed"
    outcome = answer.json["outcome"]
    assert outcome["archived_versions"] == [1] and outcome["from_stage"] == "None"
    assert "unreachable" in outcome["confirmed_after_error"]
    assert stages(mlflow_client, champion) == {1: "Archived", 2: "Production"}
    actions = [e["action"] for e in answer.json["audit_trail"]]
    assert actions[-3:-1] == ["promotion.execution_started", "promotion.executed"]
    services = get_services_of(cut_app)
    [_, moved] = events(services.db, champion, "version.stage_changed")
    assert moved.model_version == 2 and moved.after["archived_versions"] == [1]
    proxy.heal()
    assert services.reconciler.reconcile(CTX, champion).outcome == "in-step"


def test_promotion_whose_move_is_unconfirmed_stays_approved_until_the_sweep(
    cut_client, cut_app, auth, proxy, champion, mlflow_client
):
    answer = promote_v2_cut(cut_client, auth, proxy, champion, then_refuse=True)
    assert answer.status_code == 200, answer.json
    assert answer.json["status"] == "approved" and answer.json["attempts"] == 1
    assert "did not confirm the move" in answer.json["last_error"]
    assert answer.json["audit_trail"][-1]["action"] == "promotion.execution_unconfirmed"
    assert stages(mlflow_client, champion) == {1: "Archived", 2: "Production"}  # it happened
    services = get_services_of(cut_app)
    # An approved request is in flight: its move is no out-of-band change.
    assert services.reconciler.reconcile(CTX, champion).outcome == "deferred"

    request_id = answer.json["id"]

    # MLflow still unreadable at the sweep: whether the move happened stays unknown.
    assert stall_and_sweep(services, request_id)["executed_stalled"] == 1
    waiting = services.promotions.get(request_id)
    assert waiting.status is Status.APPROVED and waiting.attempts == 2
    assert "could not be read" in waiting.last_error
    proxy.heal()
    assert stall_and_sweep(services, request_id)["executed_stalled"] == 1
    settled = services.promotions.get(request_id)
    assert settled.status is Status.EXECUTED and settled.attempts == 3
    assert settled.outcome["reconciled"] is True
    assert settled.outcome["archived_versions"] == [1]
    assert [e.action for e in settled.audit_trail][-3:] == [
        "promotion.execution_started",
        "promotion.executed",
        "version.stage_changed",
    ]
    # The archived champion is in our records too, so nothing looks out of band.
    assert services.reconciler.reconcile(CTX, champion).outcome == "in-step"
