"""Model policies over REST: defaults, admin-only changes, quorum checks, audit."""

from __future__ import annotations

import pytest

from registry_service.services.context import Context
from tests.conftest import get_services_of

CTX = Context(actor="test-setup")


@pytest.fixture
def model(app, model_name):
    get_services_of(app).models.create_model(CTX, model_name, None, {})
    return model_name


def url(model):
    return f"/api/v1/models/{model}/policy"


def test_default_policy_applies_until_set(client, auth, model):
    body = client.get(url(model), headers=auth()).json
    assert body["source"] == "default" and body["revision"] == 0
    rules = {(r["target_type"], r["target"]): r["required_approvals"] for r in body["rules"]}
    assert rules == {
        ("stage", "Production"): 2,
        ("stage", "Staging"): 1,
        ("stage", "Archived"): 1,
        ("alias", "*"): 2,
    }
    assert all(not r["allow_self_approval"] for r in body["rules"])
    assert all(r["expires_after_hours"] == 168 for r in body["rules"])


def test_admin_replaces_rules_and_the_change_is_audited(client, auth, identities, model):
    rules = [
        {"target_stage": "production", "required_approvals": 3, "expires_after_hours": 24},
        {"target_alias": "champion", "required_approvals": 1, "allow_self_approval": True},
    ]
    response = client.put(url(model), headers=auth("admin"), json={"rules": rules})
    assert response.status_code == 200, response.json
    body = response.json
    assert body["source"] == "model" and body["revision"] == 1
    assert body["updated_by"] == identities["admin"]["name"]
    own = [r for r in body["rules"] if r["source"] == "model"]
    assert [(r["target"], r["required_approvals"]) for r in own] == [
        ("Production", 3),
        ("champion", 1),
    ]
    # Defaults still cover what the model does not set.
    assert {r["target"] for r in body["rules"] if r["source"] == "default"} == {
        "Staging",
        "Archived",
        "*",
    }
    events = client.get(
        "/api/v1/audit", headers=auth(), query_string={"model": model, "action": "policy.updated"}
    ).json["events"]
    assert len(events) == 1
    assert events[0]["before"]["rules"] == [] and events[0]["after"]["revision"] == 1
    assert events[0]["subject"] == f"policy:{model}"

    reverted = client.put(url(model), headers=auth("admin"), json={"rules": []}).json
    assert reverted["revision"] == 2 and reverted["source"] == "model"
    assert all(r["source"] == "default" for r in reverted["rules"])


def test_only_admins_change_policies(client, auth, model):
    body = {"rules": [{"target_stage": "Staging", "required_approvals": 0}]}
    for role in ("viewer", "requester", "approver"):
        response = client.put(url(model), headers=auth(role), json=body)
        assert response.status_code == 403 and response.json["code"] == "forbidden"
    assert client.put(url(model), json=body).status_code == 401


def test_quorum_beyond_eligible_approvers_is_refused(client, auth, identities, model):
    named = [identities["approver"]["name"], identities["approver2"]["name"]]
    response = client.put(
        url(model),
        headers=auth("admin"),
        json={
            "rules": [{"target_stage": "Production", "required_approvals": 3, "approvers": named}]
        },
    )
    assert response.status_code == 422
    assert response.json["errors"][0]["field"] == "rules.0.required_approvals"
    assert "only 2 principals can approve" in response.json["detail"]
    # A revoked admin token does not count as an approver.
    revoked_only = client.put(
        url(model),
        headers=auth("admin"),
        json={
            "rules": [
                {
                    "target_stage": "Staging",
                    "required_approvals": 1,
                    "approvers": [identities["revoked"]["name"]],
                }
            ]
        },
    )
    assert revoked_only.status_code == 422
    assert client.get(url(model), headers=auth()).json["revision"] == 0


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({"target_stage": "Prod", "required_approvals": 1}, "rules.0.target"),
        ({"target_stage": "None", "required_approvals": 1}, "rules.0.target"),
        ({"target_alias": "Champion!", "required_approvals": 1}, "rules.0.target"),
        ({"target_stage": "Staging", "required_approvals": 11}, "rules.0.required_approvals"),
        ({"target_stage": "Staging", "required_approvals": 1, "approver_role": "viewer"}, None),
        ({"required_approvals": 1}, None),
    ],
)
def test_invalid_rules_are_422(client, auth, model, rule, field):
    response = client.put(url(model), headers=auth("admin"), json={"rules": [rule]})
    assert response.status_code == 422
    if field:
        assert field in {e["field"] for e in response.json["errors"]}


def test_duplicate_targets_are_refused(client, auth, model):
    rule = {"target_stage": "Staging", "required_approvals": 1}
    response = client.put(url(model), headers=auth("admin"), json={"rules": [rule, rule]})
    assert response.status_code == 422 and "twice" in response.json["detail"]


def test_policy_of_unknown_model_is_404(client, auth):
    assert client.get(url("no-such-model-p"), headers=auth()).status_code == 404
    response = client.put(url("no-such-model-p"), headers=auth("admin"), json={"rules": []})
    assert response.status_code == 404 and response.json["code"] == "model-not-found"
