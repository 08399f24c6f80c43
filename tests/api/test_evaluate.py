"""POST /evaluate: dry runs, opening requests on the policy's path, audit, refusals."""

from __future__ import annotations

import pytest

from registry_service.domain.entities import Stage
from registry_service.services.context import Context
from tests.conftest import get_services_of

CTX = Context(actor="test-setup")


@pytest.fixture
def model(app, model_name, make_run):
    services = get_services_of(app)
    services.models.create_model(CTX, model_name, None, {})
    for auc in (0.80, 0.83, 0.90):
        run_id = make_run(metrics={"auc": auc, "latency_ms": 20})
        services.models.register_version(CTX, model_name, run_id, "model", None, {})
    services.models.transition_stage(CTX, model_name, 1, Stage.PRODUCTION)
    return model_name


def put_policy(client, auth, model, auto, rules=()):
    return client.put(
        f"/api/v1/models/{model}/policy",
        headers=auth("admin"),
        json={"rules": list(rules), "auto_promotion": auto},
    )


def evaluate(client, auth, model, version, dry_run=False):
    return client.post(
        f"/api/v1/models/{model}/versions/{version}/evaluate",
        headers=auth("requester"),
        json={"dry_run": dry_run},
    )


def test_passing_challenger_goes_to_staging_at_once(client, auth, model, mlflow_client):
    assert (
        put_policy(
            client,
            auth,
            model,
            {"metric": "auc", "min_value": 0.85, "max_latency_ms": 50},
            [{"target_stage": "Staging", "required_approvals": 0}],
        ).status_code
        == 200
    )

    dry = evaluate(client, auth, model, 3, dry_run=True).json
    assert dry["passed"] is True and dry["request"] is None
    assert dry["champion_version"] == 1
    improvement = next(c for c in dry["criteria"] if c["name"] == "improvement")
    assert improvement["challenger"] == 0.90 and improvement["champion"] == 0.80
    assert improvement["improvement"] == pytest.approx(0.125)
    assert mlflow_client.get_model_version(model, "3").current_stage == "None"

    real = evaluate(client, auth, model, 3).json
    assert real["request"]["status"] == "executed"
    assert real["request"]["reason"].startswith("auto-promotion: auc 0.9")
    assert mlflow_client.get_model_version(model, "3").current_stage == "Staging"
    events = client.get(
        "/api/v1/audit",
        headers=auth(),
        query_string={"model": model, "action": "model.evaluated"},
    ).json["events"]
    assert [e["after"]["dry_run"] for e in events] == [False, True]
    assert events[0]["before"]["champion_metrics"]["auc"] == 0.80


def test_failing_challenger_opens_nothing(client, auth, model):
    put_policy(client, auth, model, {"metric": "auc", "min_improvement": 0.1})
    result = evaluate(client, auth, model, 2).json  # 0.83 vs 0.80: 3.75%
    assert result["passed"] is False and result["request"] is None
    listed = client.get("/api/v1/promotions", headers=auth(), query_string={"model": model})
    assert listed.json["promotions"] == []


def test_production_target_waits_for_approvers(client, auth, model):
    put_policy(client, auth, model, {"metric": "auc", "target_stage": "Production"})
    result = evaluate(client, auth, model, 3).json
    assert result["passed"] and result["request"]["status"] == "pending"
    assert result["request"]["required_approvals"] == 2
    zero = put_policy(
        client,
        auth,
        model,
        {"metric": "auc", "target_stage": "Production"},
        [{"target_stage": "Production", "required_approvals": 0}],
    )
    assert zero.status_code == 422
    assert zero.json["errors"][0]["field"] == "auto_promotion.target_stage"


def test_refusals(client, auth, model):
    none_set = evaluate(client, auth, model, 3)
    assert none_set.status_code == 409 and "no auto-promotion criteria" in none_set.json["detail"]
    put_policy(client, auth, model, {"metric": "auc"})
    assert evaluate(client, auth, model, 1).status_code == 409  # the champion itself
    assert evaluate(client, auth, model, 9).status_code == 404
    bad = put_policy(client, auth, model, {"metric": "auc", "min_improvement": -1})
    assert bad.status_code == 422


def test_decisions_rest_on_the_metrics_recorded_at_registration(client, auth, model, mlflow_client):
    put_policy(
        client,
        auth,
        model,
        {"metric": "auc", "min_improvement": 0.1},
        [{"target_stage": "Staging", "required_approvals": 0}],
    )
    # After registration, MLflow still takes metrics on the finished runs: the challenger
    # is made to look better and the champion worse.
    challenger_run = mlflow_client.get_model_version(model, "2").run_id
    champion_run = mlflow_client.get_model_version(model, "1").run_id
    mlflow_client.log_metric(challenger_run, "auc", 0.99)
    mlflow_client.log_metric(champion_run, "auc", 0.5)
    assert mlflow_client.get_run(challenger_run).data.metrics["auc"] == 0.99

    result = evaluate(client, auth, model, 2).json  # 0.83 vs 0.80 as registered: 3.75%
    assert result["passed"] is False and result["request"] is None
    improvement = next(c for c in result["criteria"] if c["name"] == "improvement")
    assert (improvement["challenger"], improvement["champion"]) == (0.83, 0.80)
    assert result["evidence"] == {
        "challenger": {
            "version": 2,
            "metrics_state": "frozen",
            "changed_since_registration": [{"key": "auc", "registered": 0.83, "current": 0.99}],
        },
        "champion": {
            "version": 1,
            "metrics_state": "frozen",
            "changed_since_registration": [{"key": "auc", "registered": 0.80, "current": 0.5}],
        },
    }
    assert any(
        "challenger version 2's run changed since registration: auc was 0.83" in note
        for note in result["notes"]
    )
    (event,) = client.get(
        "/api/v1/audit", headers=auth(), query_string={"model": model, "action": "model.evaluated"}
    ).json["events"]
    assert event["before"]["challenger_metrics"]["auc"] == 0.83
    assert event["before"]["champion_metrics"]["auc"] == 0.80
    assert event["before"]["evidence"] == result["evidence"]

    # The reviewers see the same: the registered values, and the change beside them.
    opened = client.post(
        "/api/v1/promotions",
        headers=auth("requester"),
        json={"model_name": model, "version": 2, "target_stage": "Production", "reason": "r"},
    )
    assert opened.status_code == 201, opened.json
    comparison = client.get(f"/api/v1/promotions/{opened.json['id']}", headers=auth()).json[
        "comparison"
    ]
    (auc,) = [m for m in comparison["metrics"] if m["key"] == "auc"]
    assert (auc["candidate"], auc["champion"], auc["better"]) == (0.83, 0.80, "candidate")
    assert comparison["candidate"]["metrics_state"] == "frozen"
    assert comparison["candidate"]["changed_since_registration"] == [
        {"key": "auc", "registered": 0.83, "current": 0.99}
    ]
    assert comparison["champion"]["changed_since_registration"] == [
        {"key": "auc", "registered": 0.80, "current": 0.5}
    ]


def test_a_metric_logged_after_registration_counts_for_nothing(
    client, auth, app, model_name, make_run, mlflow_client
):
    services = get_services_of(app)
    services.models.create_model(CTX, model_name, None, {})
    run_id = make_run(metrics={"latency_ms": 20})
    services.models.register_version(CTX, model_name, run_id, "model", None, {})
    mlflow_client.log_metric(run_id, "auc", 0.97)
    put_policy(client, auth, model_name, {"metric": "auc"})
    result = evaluate(client, auth, model_name, 1, dry_run=True).json
    assert result["passed"] is False
    assert result["criteria"][0] == {
        "name": "metric_present",
        "passed": False,
        "detail": "challenger has no 'auc'",
        "challenger": None,
        "champion": None,
        "threshold": None,
        "improvement": None,
    }
    assert result["evidence"]["challenger"]["changed_since_registration"] == [
        {"key": "auc", "registered": None, "current": 0.97}
    ]


def test_versions_registered_outside_use_their_run_flagged_unfrozen(
    client, auth, model, make_run, mlflow_client
):
    run_id = make_run(metrics={"auc": 0.95})
    # Registered in MLflow directly: the registry recorded nothing at registration.
    outside = mlflow_client.create_model_version(model, f"runs:/{run_id}/model", run_id)
    version = int(outside.version)
    put_policy(client, auth, model, {"metric": "auc"})
    result = evaluate(client, auth, model, version, dry_run=True).json
    assert result["passed"] is True
    assert result["evidence"]["challenger"] == {
        "version": version,
        "metrics_state": "unfrozen",
        "changed_since_registration": [],
    }
    assert result["evidence"]["champion"]["metrics_state"] == "frozen"
    assert any("unfrozen" in note for note in result["notes"])

    opened = client.post(
        "/api/v1/promotions",
        headers=auth("requester"),
        json={"model_name": model, "version": version, "target_stage": "Production", "reason": "r"},
    )
    assert opened.status_code == 201, opened.json
    comparison = client.get(f"/api/v1/promotions/{opened.json['id']}", headers=auth()).json[
        "comparison"
    ]
    assert comparison["candidate"]["metrics_state"] == "unfrozen"
    assert comparison["candidate"]["changed_since_registration"] == []
    assert comparison["champion"]["metrics_state"] == "frozen"
