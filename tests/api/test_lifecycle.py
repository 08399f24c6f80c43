"""History from the audit log, rollback on the emergency path, retention."""

from __future__ import annotations

import time

import pytest

from registry_service.db.base import utcnow
from registry_service.domain.entities import Stage
from registry_service.services.context import Context
from tests.conftest import get_services_of, promote

CTX = Context(actor="test-setup")


@pytest.fixture
def model(app, model_name, make_run):
    services = get_services_of(app)
    services.models.create_model(CTX, model_name, None, {})
    for _ in range(4):
        services.models.register_version(CTX, model_name, make_run(), "model", None, {})
    return model_name


def set_policy(client, auth, model, *rules):
    response = client.put(
        f"/api/v1/models/{model}/policy", headers=auth("admin"), json={"rules": list(rules)}
    )
    assert response.status_code == 200, response.json


def rollback(client, auth, model, **target):
    return client.post(
        f"/api/v1/models/{model}/rollback",
        headers=auth("requester"),
        json={"reason": "error rate up", **target},
    )


def stage_of(mlflow_client, model, version):
    return mlflow_client.get_model_version(model, str(version)).current_stage


def test_rollback_returns_to_the_previous_holder_after_several_promotions(
    client, auth, model, mlflow_client
):
    set_policy(client, auth, model, {"target_stage": "Production", "required_approvals": 1})
    for version in (1, 2, 3):
        promote(client, auth, model, version, target_stage="Production")

    requested = rollback(client, auth, model, target_stage="Production")
    assert requested.status_code == 201, requested.json
    body = requested.json
    assert (body["kind"], body["version"], body["replaces_version"]) == ("rollback", 2, 3)
    assert body["status"] == "pending" and body["required_approvals"] == 1
    assert body["review_required"] is False
    selfish = client.post(
        f"/api/v1/promotions/{body['id']}/approve", headers=auth("requester"), json={}
    )
    assert selfish.status_code == 403
    done = client.post(
        f"/api/v1/promotions/{body['id']}/approve", headers=auth("approver"), json={}
    ).json
    assert done["status"] == "executed"
    assert stage_of(mlflow_client, model, 2) == "Production"
    assert stage_of(mlflow_client, model, 3) == "Archived"

    # Rolling back the rollback returns to 3, the version it displaced.
    again = rollback(client, auth, model, target_stage="Production").json
    assert again["version"] == 3


def test_a_rollback_keeps_the_rules_named_approvers(client, auth, model, identities):
    named = identities["approver2"]["name"]
    set_policy(
        client,
        auth,
        model,
        {"target_stage": "Production", "required_approvals": 1, "approvers": [named]},
    )
    for version in (1, 2):
        promote(client, auth, model, version, approvers=("approver2",), target_stage="Production")
    body = rollback(client, auth, model, target_stage="Production").json
    assert body["kind"] == "rollback" and body["version"] == 1
    assert body["policy"]["approvers"] == [named]
    outsider = client.post(
        f"/api/v1/promotions/{body['id']}/approve", headers=auth("approver"), json={}
    )
    assert (outsider.status_code, outsider.json["code"]) == (403, "not-eligible")
    done = client.post(
        f"/api/v1/promotions/{body['id']}/approve", headers=auth("approver2"), json={}
    ).json
    assert done["status"] == "executed"


def test_break_glass_rollback_executes_at_once_and_is_flagged(client, auth, model, mlflow_client):
    set_policy(
        client,
        auth,
        model,
        {"target_alias": "champion", "required_approvals": 1, "break_glass": True},
    )
    promote(client, auth, model, 1, target_alias="champion")
    promote(client, auth, model, 2, target_alias="champion")
    response = rollback(client, auth, model, target_alias="champion")
    assert response.status_code == 201
    body = response.json
    assert body["status"] == "executed" and body["review_required"] is True
    assert body["required_approvals"] == 0
    assert mlflow_client.get_model_version_by_alias(model, "champion").version == "1"


def test_rollback_without_earlier_holder_is_409(client, auth, model):
    response = rollback(client, auth, model, target_stage="Production")
    assert response.status_code == 409 and response.json["code"] == "illegal-transition"
    assert "nothing to roll back to" in response.json["detail"]


def test_history_answers_who_held_a_target_at_an_instant(client, auth, model):
    set_policy(client, auth, model, {"target_stage": "Production", "required_approvals": 1})
    promote(client, auth, model, 1, target_stage="Production")
    time.sleep(0.01)
    between = utcnow()
    time.sleep(0.01)
    second = promote(client, auth, model, 2, target_stage="Production")

    url = f"/api/v1/models/{model}/history"
    past = client.get(
        url,
        headers=auth(),
        query_string={"target_stage": "Production", "at": between.isoformat()},
    ).json
    assert past["holders_at"] == {"stage:Production": [1]}
    now = client.get(url, headers=auth()).json
    assert now["holders_at"] == {"stage:Production": [2], "stage:Archived": [1]}
    newest = now["tenures"][0]
    assert (newest["target"], newest["version"], newest["until"]) == ("Production", 2, None)
    assert newest["promotion_request"] == second
    ended = next(t for t in now["tenures"] if t["version"] == 1 and t["target"] == "Production")
    approver = client.get(f"/api/v1/promotions/{second}", headers=auth()).json["approvals"][0]
    assert ended["until"] is not None and ended["ended_by"] == approver["approver"]
    bad = client.get(url, headers=auth(), query_string={"at": "yesterday"})
    assert bad.status_code == 422


def test_archive_old_spares_serving_versions(client, auth, model, mlflow_client, app):
    services = get_services_of(app)
    services.models.register_version(
        CTX, model, services.models.get_version(model, 1).version.run_id, "model", None, {}
    )
    services.models.transition_stage(CTX, model, 2, Stage.PRODUCTION)
    services.models.set_alias(CTX, model, "champion", 1)
    assert (
        client.post(
            f"/api/v1/models/{model}/archive-old",
            headers=auth("requester"),
            json={"keep_latest": 1},
        ).status_code
        == 403
    )

    response = client.post(
        f"/api/v1/models/{model}/archive-old", headers=auth("admin"), json={"keep_latest": 2}
    )
    assert response.status_code == 200, response.json
    body = response.json
    assert body["kept"] == [5, 4] and body["archived"] == [3]
    assert body["spared"] == {"2": "in Production", "1": "holds alias champion"}
    assert stage_of(mlflow_client, model, 3) == "Archived"
    assert stage_of(mlflow_client, model, 1) == "None"
    again = client.post(
        f"/api/v1/models/{model}/archive-old", headers=auth("admin"), json={"keep_latest": 2}
    ).json
    assert again["archived"] == []
    zero = client.post(
        f"/api/v1/models/{model}/archive-old", headers=auth("admin"), json={"keep_latest": 0}
    )
    assert zero.status_code == 422
