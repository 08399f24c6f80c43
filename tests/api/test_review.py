"""What an approver reviews: the to-do list, the candidate beside its champion, and
requests made stale by another move settled at once."""

from __future__ import annotations

import pytest

from registry_service.services.context import Context
from tests.api.test_promotions import PROMOTIONS, act, request_promotion, set_policy
from tests.conftest import get_services_of

CTX = Context(actor="test-setup")


@pytest.fixture
def model(app, model_name, make_run):
    services = get_services_of(app)
    services.models.create_model(CTX, model_name, None, {})
    figures = [
        ({"auc": 0.80, "log_loss": 0.50, "rows": 100.0}, {"depth": "4", "lr": "0.1"}),
        ({"auc": 0.86, "log_loss": 0.40, "rows": 120.0}, {"depth": "6", "lr": "0.1"}),
        ({"auc": 0.78, "log_loss": 0.55}, {"depth": "8", "lr": "0.1", "seed": "7"}),
    ]
    for metrics, params in figures:
        run_id = make_run(metrics=metrics, params=params, tags={"data_version": "2026-10"})
        services.models.register_version(CTX, model_name, run_id, "model", None, {})
    return model_name


def one_approval(client, auth, model):
    set_policy(
        client,
        auth,
        model,
        {"target_stage": "Production", "required_approvals": 1},
        {"target_stage": "Staging", "required_approvals": 1},
    )


def executed(client, auth, model, version, stage):
    opened = request_promotion(client, auth, model, version, target_stage=stage).json
    done = act(client, auth, opened["id"], "approve", "approver")
    assert done.json["status"] == "executed", done.json
    return opened["id"]


def test_request_shows_candidate_beside_champion(client, auth, model):
    one_approval(client, auth, model)
    executed(client, auth, model, 1, "Production")
    request_id = request_promotion(client, auth, model, 2).json["id"]

    body = client.get(f"{PROMOTIONS}/{request_id}", headers=auth()).json
    comparison = body["comparison"]
    assert comparison["candidate"]["version"] == 2
    assert comparison["champion"]["version"] == 1
    metrics = {m["key"]: m for m in comparison["metrics"]}
    assert metrics["auc"]["candidate"] == 0.86 and metrics["auc"]["champion"] == 0.80
    assert metrics["auc"]["delta"] == pytest.approx(0.06)
    assert metrics["auc"]["relative_delta"] == pytest.approx(0.075)
    assert metrics["auc"]["better"] == "candidate" and metrics["auc"]["higher_is_better"]
    # Lower is better for a loss: the candidate's smaller loss wins.
    assert metrics["log_loss"]["higher_is_better"] is False
    assert metrics["log_loss"]["better"] == "candidate"
    # A metric whose direction nobody can tell is shown, never judged.
    assert metrics["rows"]["better"] is None and metrics["rows"]["delta"] == 20.0
    assert comparison["params_differing"] == [{"key": "depth", "candidate": "6", "champion": "4"}]
    assert comparison["params_same"] == 1
    candidate_run = body["evidence"]["run"]["run_id"]
    assert comparison["candidate"]["lineage"]["run_id"] == candidate_run
    assert comparison["candidate"]["lineage"]["data_version"] == "2026-10"
    assert comparison["champion"]["lineage"]["run_id"] != candidate_run


def test_policy_metric_leads_and_decides_direction(client, auth, model):
    response = client.put(
        f"/api/v1/models/{model}/policy",
        headers=auth("admin"),
        json={
            "rules": [{"target_stage": "Production", "required_approvals": 1}],
            "auto_promotion": {"metric": "rows", "higher_is_better": False},
        },
    )
    assert response.status_code == 200, response.json
    executed(client, auth, model, 1, "Production")
    request_id = request_promotion(client, auth, model, 2).json["id"]
    comparison = client.get(f"{PROMOTIONS}/{request_id}", headers=auth()).json["comparison"]
    assert comparison["primary_metric"] == "rows"
    first = comparison["metrics"][0]
    assert first["key"] == "rows" and first["higher_is_better"] is False
    assert first["better"] == "champion"


def test_first_promotion_has_no_champion(client, auth, model):
    request_id = request_promotion(client, auth, model, 3).json["id"]
    comparison = client.get(f"{PROMOTIONS}/{request_id}", headers=auth()).json["comparison"]
    assert comparison["champion"] is None
    auc = next(m for m in comparison["metrics"] if m["key"] == "auc")
    assert auc["candidate"] == 0.78 and auc["champion"] is None and auc["better"] is None
    assert comparison["params_differing"] == []


def test_actionable_lists_what_the_caller_may_approve(client, auth, model, identities):
    first = request_promotion(client, auth, model, 1).json["id"]
    admins = request_promotion(client, auth, model, 2, role="admin").json["id"]
    approved = request_promotion(client, auth, model, 3).json["id"]
    assert act(client, auth, approved, "approve", "approver").status_code == 200

    def actionable(role):
        response = client.get(
            PROMOTIONS, headers=auth(role), query_string={"actionable": "true", "model": model}
        )
        assert response.status_code == 200, response.json
        return [p["id"] for p in response.json["promotions"]]

    assert actionable("approver") == [admins, first]  # not the one it approved
    assert actionable("approver2") == [approved, admins, first]
    assert actionable("admin") == [approved, first]  # never its own request
    assert actionable("viewer") == []
    everything = client.get(PROMOTIONS, headers=auth(), query_string={"model": model})
    assert len(everything.json["promotions"]) == 3

    # Named approvers: only they see the request as theirs to act on.
    set_policy(
        client,
        auth,
        model,
        {
            "target_stage": "Staging",
            "required_approvals": 1,
            "approvers": [identities["approver2"]["name"]],
        },
    )
    staging = request_promotion(client, auth, model, 2, target_stage="Staging").json["id"]
    assert staging not in actionable("approver")
    assert staging in actionable("approver2")


def test_actionable_pages_skip_what_the_caller_cannot_approve(client, auth, model):
    theirs = request_promotion(client, auth, model, 1).json["id"]
    own = [request_promotion(client, auth, model, v, role="admin").json["id"] for v in (2, 3)]
    first = client.get(
        PROMOTIONS,
        headers=auth("admin"),
        query_string={"actionable": "true", "model": model, "max_results": 1},
    ).json
    # The two newest are the caller's own; the page reads past them.
    assert own[0] > theirs and own[1] > theirs
    assert [p["id"] for p in first["promotions"]] == [theirs]
    assert first["next_page_token"] is None


def test_move_supersedes_requests_opened_against_the_old_holder(client, auth, model):
    one_approval(client, auth, model)
    first = request_promotion(client, auth, model, 1).json["id"]
    rival = request_promotion(client, auth, model, 2).json["id"]
    executed_id = first
    assert act(client, auth, first, "approve", "approver").json["status"] == "executed"

    stale = client.get(f"{PROMOTIONS}/{rival}", headers=auth("requester")).json
    assert stale["status"] == "superseded"
    assert stale["superseded_by"] == executed_id
    note = stale["comments"][-1]
    assert note["kind"] == "superseded" and note["author"] == "system"
    assert f"request {executed_id} moved stage Production to version 1" in note["body"]
    event = next(e for e in stale["audit_trail"] if e["action"] == "promotion.superseded")
    assert event["after"]["superseded_by"] == executed_id

    refused = act(client, auth, rival, "approve", "approver2")
    assert refused.status_code == 409
    assert refused.json["code"] == "illegal-transition"
    assert refused.json["request_status"] == "superseded"

    # A request opened after the move replaces the new holder and stays open.
    fresh = request_promotion(client, auth, model, 2).json
    assert fresh["status"] == "pending" and fresh["replaces_version"] == 1
    listed = client.get(
        PROMOTIONS, headers=auth(), query_string={"model": model, "status": "superseded"}
    ).json["promotions"]
    assert [p["id"] for p in listed] == [rival]


def test_version_leaving_a_stage_supersedes_requests_to_replace_it_there(client, auth, model):
    one_approval(client, auth, model)
    executed(client, auth, model, 1, "Staging")
    to_staging = request_promotion(client, auth, model, 2, target_stage="Staging").json
    assert to_staging["replaces_version"] == 1
    unrelated = request_promotion(client, auth, model, 3, target_alias="challenger").json

    promoted = executed(client, auth, model, 1, "Production")

    stale = client.get(f"{PROMOTIONS}/{to_staging['id']}", headers=auth()).json
    assert stale["status"] == "superseded" and stale["superseded_by"] == promoted
    assert "moved version 1 out of stage Staging" in stale["comments"][-1]["body"]
    still = client.get(f"{PROMOTIONS}/{unrelated['id']}", headers=auth()).json
    assert still["status"] == "pending"
