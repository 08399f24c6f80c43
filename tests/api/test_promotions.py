"""Governed promotions over REST, on PostgreSQL and a real MLflow server."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import update

from registry_service.db.base import utcnow
from registry_service.db.models import PromotionRequestRow
from registry_service.services.context import Context
from registry_service.services.idempotency import fingerprint

CTX = Context(actor="test-setup")
PROMOTIONS = "/api/v1/promotions"


@pytest.fixture
def model(services, model_name, make_run):
    services.models.create_model(CTX, model_name, None, {})
    for auc in (0.80, 0.85, 0.90):
        run_id = make_run(metrics={"auc": auc}, params={"depth": "6"})
        services.models.register_version(CTX, model_name, run_id, "model", None, {})
    return model_name


def request_promotion(client, auth, model, version, role="requester", key=None, **body):
    headers = auth(role)
    if key:
        headers["Idempotency-Key"] = key
    payload = {"model_name": model, "version": version, "reason": "better auc", **body}
    if "target_alias" not in payload:
        payload.setdefault("target_stage", "Production")
    return client.post(PROMOTIONS, headers=headers, json=payload)


def act(client, auth, request_id, verb, role, **body):
    return client.post(f"{PROMOTIONS}/{request_id}/{verb}", headers=auth(role), json=body)


def set_policy(client, auth, model, *rules):
    response = client.put(
        f"/api/v1/models/{model}/policy", headers=auth("admin"), json={"rules": list(rules)}
    )
    assert response.status_code == 200, response.json
    return response.json


def stage_of(mlflow_client, model, version):
    return mlflow_client.get_model_version(model, str(version)).current_stage


def test_quorum_of_two_executes_and_archives_the_champion(client, auth, model, mlflow_client):
    first = request_promotion(client, auth, model, 1)
    assert first.status_code == 201, first.json
    body = first.json
    assert body["status"] == "pending"
    assert body["required_approvals"] == 2 and body["received_approvals"] == 0
    assert body["policy"]["source"] == "default"
    assert body["replaces_version"] is None
    assert body["evidence"]["run"]["metrics"] == {"auc": 0.80}
    assert first.headers["Location"].endswith(f"/promotions/{body['id']}")

    once = act(client, auth, body["id"], "approve", "approver", comment="looks good")
    assert once.status_code == 200 and once.json["status"] == "pending"
    assert once.json["received_approvals"] == 1
    assert stage_of(mlflow_client, model, 1) == "None"

    done = act(client, auth, body["id"], "approve", "approver2")
    assert done.status_code == 200
    assert done.json["status"] == "executed"
    assert stage_of(mlflow_client, model, 1) == "Production"

    second = request_promotion(client, auth, model, 2).json
    assert second["replaces_version"] == 1
    act(client, auth, second["id"], "approve", "approver")
    executed = act(client, auth, second["id"], "approve", "admin").json
    assert executed["status"] == "executed"
    assert executed["outcome"]["archived_versions"] == [1]
    assert stage_of(mlflow_client, model, 2) == "Production"
    assert stage_of(mlflow_client, model, 1) == "Archived"

    detail = client.get(f"{PROMOTIONS}/{second['id']}", headers=auth()).json
    assert [a["approver"] for a in detail["approvals"]] == [
        a["approver"] for a in executed["approvals"]
    ]
    assert [e["action"] for e in detail["audit_trail"]] == [
        "promotion.requested",
        "promotion.approved",
        "promotion.approved",
        "promotion.execution_started",
        "promotion.executed",
        "version.stage_changed",
    ]


def test_requester_cannot_approve_their_own_request(client, auth, model):
    # The admin holds every role, so only the self-approval rule stands in the way.
    request_id = request_promotion(client, auth, model, 1, role="admin").json["id"]
    response = act(client, auth, request_id, "approve", "admin")
    assert response.status_code == 403
    assert response.json["code"] == "self-approval"


def test_roles_and_named_approvers_decide_eligibility(client, auth, identities, model):
    set_policy(
        client,
        auth,
        model,
        {
            "target_stage": "Staging",
            "required_approvals": 1,
            "approvers": [identities["approver"]["name"]],
        },
    )
    request_id = request_promotion(client, auth, model, 1, target_stage="Staging").json["id"]

    viewer = act(client, auth, request_id, "approve", "viewer")
    assert viewer.status_code == 403 and viewer.json["code"] == "forbidden"
    outsider = act(client, auth, request_id, "approve", "approver2")
    assert outsider.status_code == 403 and outsider.json["code"] == "not-eligible"
    assert "named approvers" in outsider.json["detail"]
    named = act(client, auth, request_id, "approve", "approver")
    assert named.json["status"] == "executed"


def test_group_members_may_approve(client, auth, services, model):
    secret, _ = services.tokens.create(
        CTX, f"lead-{uuid.uuid4().hex[:6]}", ["approver"], groups=["ml-leads"]
    )
    set_policy(
        client,
        auth,
        model,
        {"target_alias": "champion", "required_approvals": 1, "approver_group": "ml-leads"},
    )
    request_id = request_promotion(client, auth, model, 2, target_alias="champion").json["id"]
    outsider = act(client, auth, request_id, "approve", "approver")
    assert outsider.status_code == 403 and outsider.json["code"] == "not-eligible"
    member = client.post(
        f"{PROMOTIONS}/{request_id}/approve",
        headers={"Authorization": f"Bearer {secret}"},
        json={},
    )
    assert member.status_code == 200 and member.json["status"] == "executed"
    assert client.get(f"/api/v1/models/{model}", headers=auth()).json["aliases"] == {"champion": 2}


def test_agent_and_ci_tokens_request_but_their_approvals_count_only_where_allowed(
    client, auth, services, model
):
    suffix = uuid.uuid4().hex[:6]
    bearer = {}
    for key, kind in (("agent", "agent"), ("ci", "ci"), ("assistant", "agent")):
        secret, info = services.tokens.create(
            CTX, f"{key}-{suffix}", ["requester", "approver"], kind=kind
        )
        assert info.kind == kind
        bearer[key] = {"Authorization": f"Bearer {secret}"}
    assert client.get("/api/v1/auth/whoami", headers=bearer["agent"]).json["kind"] == "agent"
    set_policy(client, auth, model, {"target_alias": "champion", "required_approvals": 1})
    opened = client.post(
        PROMOTIONS,
        headers=bearer["assistant"],
        json={"model_name": model, "version": 2, "target_alias": "champion", "reason": "auc"},
    )
    assert opened.status_code == 201, opened.json
    request_id = opened.json["id"]
    for kind in ("agent", "ci"):
        refused = client.post(f"{PROMOTIONS}/{request_id}/approve", headers=bearer[kind], json={})
        assert refused.status_code == 403 and refused.json["code"] == "not-eligible"
        assert f"{kind} token" in refused.json["detail"]
    assert client.get(f"{PROMOTIONS}/{request_id}", headers=auth()).json["approvals"] == []

    # A policy may let CI approvals count; the human default stays for other targets.
    set_policy(
        client,
        auth,
        model,
        {"target_alias": "shadow", "required_approvals": 1, "approver_kinds": ["human", "ci"]},
    )
    policy = client.get(f"/api/v1/models/{model}/policy", headers=auth()).json
    kinds = {r["target"]: r["approver_kinds"] for r in policy["rules"]}
    assert kinds["shadow"] == ["human", "ci"] and kinds["*"] == ["human"]
    shadow = request_promotion(client, auth, model, 3, target_alias="shadow").json["id"]
    agent = client.post(f"{PROMOTIONS}/{shadow}/approve", headers=bearer["agent"], json={})
    assert agent.status_code == 403 and agent.json["code"] == "not-eligible"
    ci = client.post(f"{PROMOTIONS}/{shadow}/approve", headers=bearer["ci"], json={})
    assert ci.status_code == 200 and ci.json["status"] == "executed", ci.json

    bad = client.put(
        f"/api/v1/models/{model}/policy",
        headers=auth("admin"),
        json={"rules": [{"target_alias": "x", "required_approvals": 1, "approver_kinds": []}]},
    )
    assert bad.status_code == 422


def test_an_approver_approves_once(client, auth, model):
    request_id = request_promotion(client, auth, model, 1).json["id"]
    assert act(client, auth, request_id, "approve", "approver").status_code == 200
    again = act(client, auth, request_id, "approve", "approver")
    assert again.status_code == 409 and again.json["code"] == "already-approved"
    detail = client.get(f"{PROMOTIONS}/{request_id}", headers=auth()).json
    assert detail["received_approvals"] == 1


def test_one_rejection_ends_the_request(client, auth, model, mlflow_client):
    request_id = request_promotion(client, auth, model, 1).json["id"]
    act(client, auth, request_id, "approve", "approver")

    missing = act(client, auth, request_id, "reject", "approver2")
    assert missing.status_code == 422
    assert {e["field"] for e in missing.json["errors"]} == {"comment"}

    rejected = act(client, auth, request_id, "reject", "approver2", comment="drift on segment B")
    assert rejected.status_code == 200 and rejected.json["status"] == "rejected"
    assert rejected.json["comments"][0]["kind"] == "rejection"

    late = act(client, auth, request_id, "approve", "admin")
    assert late.status_code == 409 and late.json["code"] == "illegal-transition"
    assert stage_of(mlflow_client, model, 1) == "None"


def test_cancel_by_requester_or_admin_only(client, auth, model):
    request_id = request_promotion(client, auth, model, 1).json["id"]
    other = act(client, auth, request_id, "cancel", "approver")
    assert other.status_code == 403 and other.json["code"] == "forbidden"
    mine = act(client, auth, request_id, "cancel", "requester", comment="wrong version")
    assert mine.status_code == 200 and mine.json["status"] == "cancelled"
    again = act(client, auth, request_id, "cancel", "admin")
    assert again.status_code == 409

    by_admin = request_promotion(client, auth, model, 1).json["id"]
    assert act(client, auth, by_admin, "cancel", "admin").json["status"] == "cancelled"


def test_comments_are_kept_and_audited(client, auth, model):
    request_id = request_promotion(client, auth, model, 1).json["id"]
    response = act(client, auth, request_id, "comments", "viewer", comment="latency checked?")
    assert response.status_code == 201
    assert response.json["comments"][-1]["body"] == "latency checked?"
    assert response.json["audit_trail"][-1]["action"] == "promotion.commented"
    empty = act(client, auth, request_id, "comments", "viewer", comment="")
    assert empty.status_code == 422


def test_expired_request_cannot_be_approved(client, auth, services, model, mlflow_client):
    request_id = request_promotion(client, auth, model, 1).json["id"]
    with services.db.transaction() as session:
        session.execute(
            update(PromotionRequestRow)
            .where(PromotionRequestRow.id == request_id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    late = act(client, auth, request_id, "approve", "approver")
    assert late.status_code == 409 and late.json["request_status"] == "expired"
    assert "expired" in late.json["detail"]
    detail = client.get(f"{PROMOTIONS}/{request_id}", headers=auth()).json
    assert detail["status"] == "expired" and detail["received_approvals"] == 0
    assert detail["audit_trail"][-1]["action"] == "promotion.expired"
    assert detail["audit_trail"][-1]["actor"] == "system"
    assert stage_of(mlflow_client, model, 1) == "None"
    # The slot is free again.
    assert request_promotion(client, auth, model, 1).status_code == 201


def test_listing_expires_due_requests(client, auth, services, model):
    request_id = request_promotion(client, auth, model, 3).json["id"]
    with services.db.transaction() as session:
        session.execute(
            update(PromotionRequestRow)
            .where(PromotionRequestRow.id == request_id)
            .values(expires_at=utcnow() - timedelta(minutes=1))
        )
    page = client.get(PROMOTIONS, headers=auth(), query_string={"model": model}).json
    assert [(p["id"], p["status"]) for p in page["promotions"]] == [(request_id, "expired")]


def test_idempotency_key_replays_the_first_response(client, auth, model):
    key = f"ci-{uuid.uuid4()}"
    first = request_promotion(client, auth, model, 1, key=key)
    again = request_promotion(client, auth, model, 1, key=key)
    assert first.status_code == again.status_code == 201
    assert again.json == first.json
    assert again.headers["Idempotent-Replayed"] == "true"
    listed = client.get(PROMOTIONS, headers=auth(), query_string={"model": model}).json
    assert len(listed["promotions"]) == 1

    other_body = request_promotion(client, auth, model, 2, key=key)
    assert other_body.status_code == 422
    assert other_body.json["code"] == "idempotency-key-reused"


def test_idempotency_replays_errors_and_refuses_twins_in_flight(
    client, auth, identities, services, model
):
    refused_key = f"ci-{uuid.uuid4()}"
    missing = request_promotion(client, auth, model, 99, key=refused_key)
    assert missing.status_code == 404
    replay = request_promotion(client, auth, model, 99, key=refused_key)
    assert (replay.status_code, replay.json["code"]) == (404, missing.json["code"])

    key = f"ci-{uuid.uuid4()}"
    body = {
        "model_name": model,
        "version": 1,
        "reason": "better auc",
        "target_stage": "Production",
    }
    claimed = services.idempotency.begin(
        identities["requester"]["name"], key, fingerprint("POST", PROMOTIONS, body)
    )
    assert claimed is None
    twin = client.post(PROMOTIONS, headers={**auth("requester"), "Idempotency-Key": key}, json=body)
    assert twin.status_code == 409 and twin.json["code"] == "idempotency-in-flight"


def test_one_open_request_per_version_and_target(client, auth, model):
    first = request_promotion(client, auth, model, 1).json
    second = request_promotion(client, auth, model, 1)
    assert second.status_code == 409
    assert second.json["code"] == "open-request-exists"
    assert second.json["existing_request_id"] == first["id"]
    assert str(first["id"]) in second.json["detail"]
    # Another target for the same version is a different slot.
    assert request_promotion(client, auth, model, 1, target_stage="Staging").status_code == 201


def test_zero_approvals_execute_at_once_and_still_audit(client, auth, model, mlflow_client):
    set_policy(client, auth, model, {"target_alias": "champion", "required_approvals": 0})
    response = request_promotion(client, auth, model, 3, target_alias="champion")
    assert response.status_code == 201
    body = response.json
    assert body["status"] == "executed" and body["outcome"]["previous_version"] is None
    assert mlflow_client.get_model_version_by_alias(model, "champion").version == "3"
    actions = [e["action"] for e in body["audit_trail"]]
    assert actions[:2] == ["promotion.requested", "promotion.approved"]
    assert actions[-2:] == ["promotion.executed", "alias.set"]


@pytest.mark.filterwarnings("ignore:.*transition_model_version_stage:FutureWarning")
def test_stale_approvals_fail_instead_of_acting(client, auth, model, mlflow_client):
    request_id = request_promotion(client, auth, model, 2).json["id"]
    # Production moves behind the request's back.
    mlflow_client.transition_model_version_stage(model, "3", "Production")
    act(client, auth, request_id, "approve", "approver")
    result = act(client, auth, request_id, "approve", "approver2").json
    assert result["status"] == "failed"
    assert "moved from no version to version 3" in result["last_error"]
    assert stage_of(mlflow_client, model, 2) == "None"
    assert stage_of(mlflow_client, model, 3) == "Production"

    deleted = request_promotion(client, auth, model, 1, target_stage="Staging").json["id"]
    mlflow_client.delete_model_version(model, "1")
    act(client, auth, deleted, "approve", "approver")
    gone = client.get(f"{PROMOTIONS}/{deleted}", headers=auth()).json
    assert gone["status"] == "failed" and "no longer exists" in gone["last_error"]


def test_invalid_requests_are_problems(client, auth, model):
    both = request_promotion(
        client, auth, model, 1, target_alias="champion", target_stage="Staging"
    )
    assert both.status_code == 422
    bad_stage = request_promotion(client, auth, model, 1, target_stage="Prod")
    assert bad_stage.status_code == 422 and bad_stage.json["errors"][0]["field"] == "target_stage"
    none_stage = request_promotion(client, auth, model, 1, target_stage="None")
    assert none_stage.status_code == 422
    bad_alias = request_promotion(client, auth, model, 1, target_alias="v3")
    assert bad_alias.status_code == 422
    blank = request_promotion(client, auth, model, 1, reason="  ")
    assert blank.status_code == 422
    viewer = request_promotion(client, auth, model, 1, role="viewer")
    assert viewer.status_code == 403
    unknown = request_promotion(client, auth, "no-such-model-x", 1)
    assert unknown.status_code == 404 and unknown.json["code"] == "model-not-found"
    assert client.get(f"{PROMOTIONS}/999999", headers=auth()).json["code"] == (
        "promotion-not-found"
    )
    already = request_promotion(client, auth, model, 1, target_stage="Staging")
    act(client, auth, already.json["id"], "approve", "approver")
    assert request_promotion(client, auth, model, 1, target_stage="Staging").json["code"] == (
        "illegal-transition"
    )


def test_quorum_that_cannot_be_met_is_refused_at_request(client, auth, identities, model):
    set_policy(
        client,
        auth,
        model,
        {
            "target_stage": "Staging",
            "required_approvals": 1,
            "approvers": [identities["admin"]["name"]],
        },
    )
    response = request_promotion(client, auth, model, 1, role="admin", target_stage="Staging")
    assert response.status_code == 409
    assert response.json["code"] == "quorum-unreachable"


def test_list_filters_and_pages(client, auth, identities, model):
    ids = [request_promotion(client, auth, model, v).json["id"] for v in (1, 2, 3)]
    act(client, auth, ids[0], "cancel", "requester")
    first = client.get(
        PROMOTIONS, headers=auth(), query_string={"model": model, "max_results": 2}
    ).json
    assert [p["id"] for p in first["promotions"]] == [ids[2], ids[1]]
    rest = client.get(
        PROMOTIONS,
        headers=auth(),
        query_string={"model": model, "max_results": 2, "page_token": first["next_page_token"]},
    ).json
    assert [p["id"] for p in rest["promotions"]] == [ids[0]] and rest["next_page_token"] is None
    pending = client.get(
        PROMOTIONS,
        headers=auth(),
        query_string={
            "model": model,
            "status": "pending",
            "requester": identities["requester"]["name"],
        },
    ).json
    assert [p["id"] for p in pending["promotions"]] == [ids[2], ids[1]]
    bad = client.get(PROMOTIONS, headers=auth(), query_string={"status": "done"})
    assert bad.status_code == 422
