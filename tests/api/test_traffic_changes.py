"""Traffic is governed like stages: a deployment change, removal or A/B test start that
moves traffic is a change request in the promotion workflow, on PostgreSQL and a real
`mlflow server`, with real models answering predictions."""

from __future__ import annotations

import uuid

import pytest

from registry_service.services.context import Context
from tests.api.test_promotions import PROMOTIONS, act, set_policy
from tests.conftest import (
    apply_deployment,
    approve_change,
    audit_rows,
    expected,
    predict,
    serve_two_versions,
)

CTX = Context(actor="test-setup")
ROWS = [{"a": 0.9, "b": 0.1}, {"a": 0.35, "b": 0.5}, {"a": 0.1, "b": 0.9}]
TO_STAGING = {"variants": [{"name": "staging", "target_stage": "Staging", "weight": 100}]}
DEFAULT_VARIANTS = [{"name": "default", "target_stage": "Production", "weight": 100}]


@pytest.fixture
def served(client, auth, services, model_name, mlflow_client):
    """v1 (a > 0.5) in Production, v2 (a > 0.2) in Staging; estimators by version."""
    return model_name, serve_two_versions(
        client, auth, services, model_name, mlflow_client, target_stage="Staging"
    )


def url_of(model: str) -> str:
    return f"/api/v1/models/{model}/deployment"


def put(client, auth, model, spec, etag, role="approver", **headers):
    return client.put(url_of(model), headers={**auth(role), "If-Match": etag, **headers}, json=spec)


def served_version(client, auth, services, model) -> int:
    services.serving.refresh(model)
    answer = predict(client, auth, model, {"dataframe_records": ROWS})
    assert answer.status_code == 200, answer.json
    return answer.json["model_version"]


def trail(client, auth, request_id) -> list[str]:
    detail = client.get(f"{PROMOTIONS}/{request_id}", headers=auth()).json
    return [e["action"] for e in detail["audit_trail"]]


def test_all_traffic_to_staging_waits_for_productions_quorum(
    client, auth, services, served, identities
):
    model, estimators = served
    asked = put(client, auth, model, TO_STAGING | {"reason": "Staging on all traffic"}, '"0"')
    assert asked.status_code == 202, asked.json
    body = asked.json
    assert asked.headers["Location"] == f"/api/v1/promotions/{body['id']}"
    assert (body["kind"], body["status"], body["version"]) == ("deployment", "pending", 0)
    assert body["target_stage"] is None and body["target_alias"] is None
    assert body["reason"] == "Staging on all traffic"
    # The strictest rule involved: Production's, two approvals.
    assert body["required_approvals"] == 2
    assert (body["policy"]["target_type"], body["policy"]["target"]) == ("stage", "Production")
    change = body["evidence"]["deployment"]
    assert change["before"]["variants"] == DEFAULT_VARIANTS
    assert change["after"]["variants"] == TO_STAGING["variants"]
    assert (change["base_revision"], change["routing_change"]) == (0, "traffic")
    assert change["changed_targets"] == ["stage Production", "stage Staging"]

    assert client.get(url_of(model), headers=auth()).headers["ETag"] == '"0"'
    assert served_version(client, auth, services, model) == 1
    own = act(client, auth, body["id"], "approve", "approver")
    assert (own.status_code, own.json["code"]) == (403, "self-approval")
    once = act(client, auth, body["id"], "approve", "approver2")
    assert once.json["status"] == "pending" and once.json["received_approvals"] == 1
    assert served_version(client, auth, services, model) == 1  # one approver is not enough

    done = act(client, auth, body["id"], "approve", "admin")
    assert done.status_code == 200 and done.json["status"] == "executed", done.json
    assert done.json["outcome"] == {"deployment_revision": 1, "routing_change": "traffic"}
    services.serving.refresh(model)
    answer = predict(client, auth, model, {"dataframe_records": ROWS})
    assert answer.json["model_version"] == 2 and answer.json["served_from"] == "Staging"
    assert answer.json["variant"] == "staging"
    assert answer.json["predictions"] == expected(estimators[2], ROWS)

    detail = client.get(f"{PROMOTIONS}/{body['id']}", headers=auth()).json
    assert detail["comparison"] is None
    assert [e["action"] for e in detail["audit_trail"]] == [
        "promotion.requested",
        "promotion.approved",
        "promotion.approved",
        "promotion.executed",
        "deployment.updated",
    ]
    updated = detail["audit_trail"][-1]
    assert updated["after"]["promotion_request"] == body["id"]
    assert updated["after"]["revision"] == 1 and updated["before"]["revision"] == 0
    assert updated["actor"] == identities["admin"]["name"]
    # Traffic requests name no model version in the audit log.
    assert {e["model_version"] for e in detail["audit_trail"]} == {None}


def test_removing_a_deployment_waits_for_the_quorum_too(client, auth, services, served):
    model, _ = served
    apply_deployment(client, auth, model, TO_STAGING)
    assert served_version(client, auth, services, model) == 2
    removal = client.delete(url_of(model), headers={**auth("approver"), "If-Match": '"1"'})
    assert removal.status_code == 202, removal.json
    assert removal.json["evidence"]["deployment"]["after"] is None
    assert removal.json["required_approvals"] == 2
    act(client, auth, removal.json["id"], "approve", "approver2")
    assert served_version(client, auth, services, model) == 2
    assert client.get(url_of(model), headers=auth()).headers["ETag"] == '"1"'
    done = act(client, auth, removal.json["id"], "approve", "admin")
    assert done.json["status"] == "executed" and done.json["outcome"]["deployment_revision"] == 0
    assert client.get(url_of(model), headers=auth()).json["is_default"] is True
    assert served_version(client, auth, services, model) == 1
    assert trail(client, auth, removal.json["id"])[-2:] == [
        "promotion.executed",
        "deployment.deleted",
    ]


def test_changes_that_leave_routing_alone_apply_at_once(client, auth, services, served):
    model, _ = served
    preload = {"variants": DEFAULT_VARIANTS, "preload": True}
    first = put(client, auth, model, preload, '"0"')
    assert first.status_code == 200, first.json
    assert first.json["preload"] is True and first.json["revision"] == 1
    assert first.headers["ETag"] == '"1"'
    second = put(client, auth, model, preload | {"fallback": False}, '"1"')
    assert second.status_code == 200 and second.json["fallback"] is False
    listed = client.get(f"{PROMOTIONS}?model={model}&max_results=50", headers=auth()).json
    assert [p["kind"] for p in listed["promotions"]] == ["promotion", "promotion"]
    events = audit_rows(services, model, "deployment.updated")
    assert [e.after["revision"] for e in events] == [1, 2]
    assert all("promotion_request" not in e.after for e in events)


def test_a_reweight_takes_the_policys_lighter_rule_never_none(client, auth, services, served):
    model, _ = served
    policy_url = f"/api/v1/models/{model}/policy"
    for rule, field in (
        ({"target_deployment": "reweight", "required_approvals": 0}, "rules.0.required_approvals"),
        ({"target_deployment": "traffic", "required_approvals": 0}, "rules.0.required_approvals"),
    ):
        refused = client.put(policy_url, headers=auth("admin"), json={"rules": [rule]})
        assert refused.status_code == 422 and refused.json["code"] == "validation-error"
        assert refused.json["errors"][0]["field"] == field
    sideways = client.put(
        policy_url,
        headers=auth("admin"),
        json={"rules": [{"target_deployment": "sideways", "required_approvals": 1}]},
    )
    assert sideways.status_code == 422 and sideways.json["code"] == "validation-error"
    shown = set_policy(
        client, auth, model, {"target_deployment": "reweight", "required_approvals": 1}
    )
    assert {"target_type": "deployment", "target": "reweight"}.items() <= shown["rules"][0].items()

    split = {
        "variants": [
            {"name": "champion", "target_stage": "Production", "weight": 90},
            {"name": "challenger", "target_stage": "Staging", "weight": 10},
        ]
    }
    routed = put(client, auth, model, split, '"0"')
    assert routed.json["required_approvals"] == 2  # Staging gets traffic: not a reweight
    approve_change(client, auth, routed)

    split["variants"][0]["weight"], split["variants"][1]["weight"] = 50, 50
    reweight = put(client, auth, model, split, '"1"')
    assert reweight.status_code == 202, reweight.json
    assert reweight.json["evidence"]["deployment"]["routing_change"] == "reweight"
    assert reweight.json["required_approvals"] == 1
    rule = reweight.json["policy"]
    assert (rule["target_type"], rule["target"], rule["source"]) == (
        "deployment",
        "reweight",
        "model",
    )
    done = approve_change(client, auth, reweight, approvers=("approver2",))
    assert done.json["status"] == "executed", done.json
    shown = client.get(url_of(model), headers=auth()).json
    assert [v["weight"] for v in shown["variants"]] == [50, 50]

    sticky = put(client, auth, model, split | {"sticky_by": "header:X-Subject"}, '"2"')
    assert sticky.json["evidence"]["deployment"]["routing_change"] == "reweight"
    assert sticky.json["required_approvals"] == 1
    act(client, auth, sticky.json["id"], "cancel", "approver")
    back = put(client, auth, model, {"variants": DEFAULT_VARIANTS}, '"2"')
    assert back.json["required_approvals"] == 2  # Staging loses its traffic


def test_a_request_against_a_deployment_that_moved_fails_at_its_quorum(
    client, auth, services, served
):
    model, _ = served
    asked = put(client, auth, model, TO_STAGING, '"0"')
    assert asked.status_code == 202
    moved = put(client, auth, model, {"variants": DEFAULT_VARIANTS, "preload": True}, '"0"')
    assert moved.status_code == 200 and moved.json["revision"] == 1
    act(client, auth, asked.json["id"], "approve", "approver2")
    done = act(client, auth, asked.json["id"], "approve", "admin")
    assert done.status_code == 200 and done.json["status"] == "failed", done.json
    assert "moved from revision 0 to 1" in done.json["last_error"]
    assert trail(client, auth, asked.json["id"]) == [
        "promotion.requested",
        "promotion.approved",
        "promotion.approved",
        "promotion.failed",
    ]
    shown = client.get(url_of(model), headers=auth()).json
    assert shown["revision"] == 1 and shown["variants"][0]["target_stage"] == "Production"
    assert served_version(client, auth, services, model) == 1
    retried = act(client, auth, asked.json["id"], "retry", "admin")
    assert (retried.status_code, retried.json["code"]) == (409, "illegal-transition")
    again = put(client, auth, model, TO_STAGING, '"1"')
    assert again.status_code == 202 and again.json["version"] == 1


def test_one_open_change_per_revision_and_idempotent_retries(client, auth, services, served):
    model, _ = served
    key = f"traffic-{uuid.uuid4().hex}"
    first = put(client, auth, model, TO_STAGING, '"0"', **{"Idempotency-Key": key})
    assert first.status_code == 202, first.json
    retry = put(client, auth, model, TO_STAGING, '"0"', **{"Idempotency-Key": key})
    assert retry.status_code == 202 and retry.json["id"] == first.json["id"]
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.headers["Location"] == first.headers["Location"]
    reused = put(
        client, auth, model, {"variants": DEFAULT_VARIANTS}, '"0"', **{"Idempotency-Key": key}
    )
    assert (reused.status_code, reused.json["code"]) == (422, "idempotency-key-reused")
    split = {
        "variants": [
            {"name": "champion", "target_stage": "Production", "weight": 80},
            {"name": "challenger", "target_stage": "Staging", "weight": 20},
        ]
    }
    taken = put(client, auth, model, split, '"0"')
    assert (taken.status_code, taken.json["code"]) == (409, "open-request-exists")
    assert taken.json["existing_request_id"] == first.json["id"]

    rejected = act(client, auth, first.json["id"], "reject", "approver2", comment="not yet")
    assert rejected.json["status"] == "rejected"
    second = put(client, auth, model, split, '"0"')
    assert second.status_code == 202 and second.json["id"] != first.json["id"]
    assert act(client, auth, second.json["id"], "cancel", "approver").json["status"] == "cancelled"
    assert client.get(url_of(model), headers=auth()).json["is_default"] is True
    assert served_version(client, auth, services, model) == 1


def test_an_ab_test_starts_only_when_its_split_is_approved(
    client, auth, services, served, identities
):
    model, _ = served
    tests_url = f"/api/v1/models/{model}/ab-tests"
    requested = client.post(
        tests_url,
        headers=auth("approver"),
        json={
            "champion": {"target_stage": "Production"},
            "challenger": {"target_stage": "Staging"},
            "challenger_share": 20,
            "min_samples": 10,
        },
    )
    assert requested.status_code == 202, requested.json
    assert requested.headers["Location"] == f"/api/v1/promotions/{requested.json['id']}"
    assert requested.json["kind"] == "deployment" and requested.json["required_approvals"] == 2
    test = requested.json["evidence"]["abtest"]
    assert test["challenger"]["version"] == 2 and test["challenger_share"] == 20
    assert client.get(tests_url, headers=auth()).json == []

    act(client, auth, requested.json["id"], "approve", "approver2")
    assert client.get(tests_url, headers=auth()).json == []
    assert client.get(url_of(model), headers=auth()).json["is_default"] is True
    done = act(client, auth, requested.json["id"], "approve", "admin")
    assert done.json["status"] == "executed", done.json
    (running,) = client.get(tests_url, headers=auth()).json
    assert running["id"] == done.json["outcome"]["ab_test_id"]
    assert running["status"] == "running"
    assert running["started_by"] == identities["approver"]["name"]
    split = client.get(url_of(model), headers=auth()).json
    assert [v["weight"] for v in split["variants"]] == [80, 20]

    # Concluding returns to the split approved before the test: no new approval.
    concluded = client.post(
        f"{tests_url}/{running['id']}/conclude", headers=auth("approver"), json={}
    )
    assert concluded.status_code == 200 and concluded.json["status"] == "concluded"
    assert client.get(url_of(model), headers=auth()).json["is_default"] is True
    assert served_version(client, auth, services, model) == 1


def test_lower_roles_and_machine_tokens_cannot_move_traffic(
    client, auth, services, served, identities
):
    """Requesting a traffic change takes the approver role; approving one takes a person:
    a CI or agent token with the approver role is not eligible."""
    model, _ = served
    for role in ("viewer", "requester", "predictor_only"):
        refused = put(client, auth, model, TO_STAGING, '"0"', role=role)
        assert (refused.status_code, refused.json["code"]) == (403, "forbidden"), role
        ab = client.post(
            f"/api/v1/models/{model}/ab-tests",
            headers=auth(role),
            json={
                "champion": {"target_stage": "Production"},
                "challenger": {"target_stage": "Staging"},
            },
        )
        assert (ab.status_code, ab.json["code"]) == (403, "forbidden"), role
    asked = put(client, auth, model, TO_STAGING, '"0"')
    assert asked.status_code == 202, asked.json
    for kind in ("ci", "agent"):
        secret, _ = services.tokens.create(
            Context(actor="test-setup"), f"{kind}-{uuid.uuid4().hex[:6]}", ["approver"], kind=kind
        )
        machine = client.post(
            f"{PROMOTIONS}/{asked.json['id']}/approve",
            headers={"Authorization": f"Bearer {secret}"},
            json={},
        )
        assert (machine.status_code, machine.json["code"]) == (403, "not-eligible"), kind
    assert served_version(client, auth, services, model) == 1
