"""Serving over REST on PostgreSQL and a real `mlflow server`, with real scikit-learn
models: what each target serves, every input format, pins, splits, fallback, the log."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from registry_service.db.models import AuditEventRow, PredictionFeedbackRow, PredictionRow
from registry_service.services.context import Context
from tests.conftest import (
    apply_deployment,
    approve_change,
    audit_rows,
    expected,
    get_services_of,
    predict,
    promote,
    serve_two_versions,
)
from tests.serving_models import log_raising, log_unloadable

CTX = Context(actor="test-setup")
ROW = {"a": 0.9, "b": 0.1}
ROWS = [{"a": 0.9, "b": 0.1}, {"a": 0.35, "b": 0.5}, {"a": 0.1, "b": 0.9}]


@pytest.fixture
def served(client, auth, services, model_name, mlflow_client):
    """v1 (a > 0.5) in Production, then v2 (a > 0.2) registered; estimators by version."""
    return model_name, serve_two_versions(client, auth, services, model_name, mlflow_client)


def test_nothing_in_production_is_404_naming_the_target(client, auth, services, model_name):
    services.models.create_model(CTX, model_name, None, {})
    answer = predict(client, auth, model_name, {"dataframe_records": [ROW]})
    assert answer.status_code == 404
    assert answer.json["code"] == "target-not-held" and answer.json["target"] == "Production"
    missing = predict(client, auth, "no-such-model-x", {"dataframe_records": [ROW]})
    assert missing.status_code == 404 and missing.json["code"] == "model-not-found"


def test_predict_serves_production_and_follows_a_promotion(client, auth, services, served):
    model, estimators = served
    first = predict(client, auth, model, {"dataframe_records": ROWS})
    assert first.status_code == 200, first.json
    assert first.json["model_version"] == 1 and first.headers["X-Model-Version"] == "1"
    assert first.json["predictions"] == expected(estimators[1], ROWS)
    assert first.json["served_from"] == "Production" and first.json["fallback"] is False
    assert first.json["request_id"] == first.headers["X-Request-ID"]

    promote(client, auth, model, 2)
    services.serving.refresh(model)
    second = predict(client, auth, model, {"dataframe_records": ROWS})
    assert second.json["model_version"] == 2
    assert second.json["predictions"] == expected(estimators[2], ROWS)
    assert expected(estimators[1], ROWS) != expected(estimators[2], ROWS)

    status = client.get("/api/v1/serving/models", headers=auth("viewer")).json
    (route,) = [r for r in status["routes"] if r["model_name"] == model]
    assert route["variants"][0] | {} == {
        "name": "default",
        "target": "Production",
        "weight": 100,
        "version": 2,
        "fallback_version": 1,
    }
    loaded = {m["version"] for m in status["models"] if m["model_name"] == model}
    assert loaded == {1, 2}


@pytest.mark.parametrize(
    "body",
    [
        {"dataframe_split": {"columns": ["a", "b"], "data": [[r["a"], r["b"]] for r in ROWS]}},
        {"dataframe_records": ROWS},
        {"instances": ROWS},
        {"inputs": {"a": [r["a"] for r in ROWS], "b": [r["b"] for r in ROWS]}},
    ],
    ids=["dataframe_split", "dataframe_records", "instances", "inputs"],
)
def test_every_mlflow_scoring_format_answers_the_same(client, auth, served, body):
    model, estimators = served
    answer = predict(client, auth, model, body | {"params": {}})
    assert answer.status_code == 200, answer.json
    assert answer.json["predictions"] == expected(estimators[1], ROWS)


def test_open_inference_protocol(client, auth, served):
    model, estimators = served
    assert client.get("/v2/health/live").json == {"live": True}
    assert client.get("/v2/health/ready").status_code == 200
    meta = client.get(f"/v2/models/{model}", headers=auth("viewer"))
    assert meta.status_code == 200
    assert meta.json["versions"] == ["1"] and meta.json["platform"] == "mlflow"
    assert [i["name"] for i in meta.json["inputs"]] == ["a", "b"]
    assert {i["datatype"] for i in meta.json["inputs"]} == {"FP64"}
    # Version 2 holds nothing yet: pinned V2 reads refuse it before loading anything.
    one_row = {"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": [0.5]}]}
    for method, path in (("get", ""), ("get", "/ready"), ("post", "/infer")):
        refused = getattr(client, method)(
            f"/v2/models/{model}/versions/2{path}", headers=auth("viewer"), json=one_row
        )
        assert (refused.status_code, refused.json["code"]) == (403, "version-not-servable")
    promote(client, auth, model, 2, target_alias="challenger")
    ready = client.get(f"/v2/models/{model}/versions/2/ready", headers=auth("viewer"))
    assert ready.json == {"name": model, "ready": True}

    tensors = {
        "id": "req-7",
        "inputs": [
            {"name": "a", "shape": [3], "datatype": "FP64", "data": [r["a"] for r in ROWS]},
            {"name": "b", "shape": [3], "datatype": "FP64", "data": [r["b"] for r in ROWS]},
        ],
    }
    infer = client.post(f"/v2/models/{model}/infer", headers=auth("viewer"), json=tensors)
    assert infer.status_code == 200, infer.json
    assert infer.json["id"] == "req-7" and infer.json["model_version"] == "1"
    (out,) = infer.json["outputs"]
    assert out["shape"] == [3] and out["data"] == expected(estimators[1], ROWS)
    pinned = client.post(
        f"/v2/models/{model}/versions/2/infer", headers=auth("viewer"), json=tensors
    )
    assert pinned.json["model_version"] == "2"
    assert pinned.json["outputs"][0]["data"] == expected(estimators[2], ROWS)
    bad = client.post(
        f"/v2/models/{model}/infer",
        headers=auth("viewer"),
        json={"inputs": [{"name": "a", "shape": [2], "datatype": "FP64", "data": [1.0]}]},
    )
    assert bad.status_code == 422 and bad.json["errors"][0]["field"] == "inputs.0.data"


def test_pins_by_version_stage_and_alias(client, auth, served):
    model, _ = served
    promote(client, auth, model, 2, target_alias="challenger")
    assert (
        predict(client, auth, model, {"inputs": ROWS}, query="?version=2").json["served_from"]
        == "version 2"
    )
    by_alias = predict(client, auth, model, {"inputs": ROWS}, query="?alias=challenger")
    assert by_alias.json["model_version"] == 2 and by_alias.json["served_from"] == "@challenger"
    by_stage = predict(client, auth, model, {"inputs": ROWS}, query="?stage=production")
    assert by_stage.json["model_version"] == 1
    cases = [
        ("?alias=nobody", 404, "target-not-held"),
        ("?stage=Staging", 404, "target-not-held"),
        ("?version=99", 404, "version-not-found"),
        ("?version=1&stage=Production", 422, "validation-error"),
        ("?version=1.5", 422, "validation-error"),
        ("?stage=Limbo", 422, "validation-error"),
        ("?versoin=1", 422, "validation-error"),
    ]
    for query, status, code in cases:
        answer = predict(client, auth, model, {"inputs": ROWS}, query=query)
        assert (answer.status_code, answer.json["code"]) == (status, code), query


def test_input_that_breaks_the_signature_is_a_422_naming_the_field(client, auth, served):
    model, _ = served
    missing = predict(client, auth, model, {"dataframe_records": [{"a": 0.3}]})
    assert missing.status_code == 422
    assert missing.json["errors"] == [
        {"field": "dataframe_records.b", "location": "json", "message": "missing input"}
    ]
    wrong = predict(client, auth, model, {"dataframe_records": [{"a": "high", "b": 0.1}]})
    assert wrong.status_code == 422 and wrong.json["errors"][0]["field"] == "dataframe_records.a"
    assert "high" not in wrong.json["detail"]
    for body in ({}, {"rows": ROWS}, {"inputs": ROWS, "instances": ROWS}, [ROW]):
        answer = predict(client, auth, model, body)
        assert answer.status_code == 422, body
    nul = predict(client, auth, model, {"dataframe_records": [{"a": "x\u0000", "b": 0.1}]})
    assert nul.status_code == 422
    garbage = client.post(
        f"/api/v1/models/{model}/predict",
        headers={**auth("viewer"), "Content-Type": "application/json"},
        data=b'{"inputs": [',
    )
    assert garbage.status_code == 400 and garbage.json["code"] == "bad-request"
    csv = client.post(
        f"/api/v1/models/{model}/predict",
        headers={**auth("viewer"), "Content-Type": "text/plain"},
        data=b"a,b\n1,2\n",
    )
    assert csv.status_code == 415
    huge = predict(client, auth, model, {"inputs": {"a": [0.5] * 200_000, "b": [0.5] * 200_000}})
    assert huge.status_code == 413


def test_deployment_changes_need_approvers_the_etag_and_are_audited(
    client, auth, served, services, identities
):
    model, _ = served
    url = f"/api/v1/models/{model}/deployment"
    default = client.get(url, headers=auth("viewer"))
    assert default.status_code == 200 and default.headers["ETag"] == '"0"'
    assert default.json["is_default"] is True and default.json["variants"][0]["version"] == 1
    split = {
        "variants": [
            {"name": "champion", "target_stage": "Production", "weight": 90},
            {"name": "challenger", "target_alias": "challenger", "weight": 10},
        ],
        "sticky_by": "header:X-Subject-Id",
    }
    assert client.put(url, headers=auth("requester"), json=split).status_code == 403
    assert client.put(url, headers=auth("predictor_only"), json=split).status_code == 403
    put = client.put(url, headers={**auth("approver"), "If-Match": '"0"'}, json=split)
    assert put.status_code == 202 and put.json["status"] == "pending", put.json
    assert client.get(url, headers=auth()).headers["ETag"] == '"0"'  # nothing moved yet
    done = approve_change(client, auth, put)
    assert done.json["status"] == "executed", done.json
    shown = client.get(url, headers=auth())
    assert shown.headers["ETag"] == '"1"' and shown.json["revision"] == 1
    assert shown.json["variants"][1] == {
        "name": "challenger",
        "target_alias": "challenger",
        "weight": 10,
        "version": None,
    }
    again = client.put(url, headers=auth("approver"), json=split)
    assert again.status_code == 428 and again.json["code"] == "precondition-required"
    stale = client.put(url, headers={**auth("admin"), "If-Match": '"0"'}, json=split)
    assert stale.status_code == 412 and stale.json["etag"] == '"1"'
    bad = client.put(
        url,
        headers={**auth("admin"), "If-Match": '"1"'},
        json=split | {"variants": split["variants"][:1]},
    )
    assert bad.status_code == 422 and bad.json["errors"][0]["field"] == "variants"
    events = audit_rows(services, model, "deployment.updated")
    (event,) = events
    assert event.before["variants"][0]["name"] == "default" and event.before["revision"] == 0
    assert event.after["variants"][1]["target_alias"] == "challenger"
    assert event.after["promotion_request"] == put.json["id"]
    assert event.actor == identities["admin"]["name"]  # the approval that executed it
    none = client.get("/api/v1/models/no-such-model-x/deployment", headers=auth("viewer"))
    assert none.status_code == 404

    assert client.delete(url, headers=auth("approver")).status_code == 428
    assert client.delete(url, headers={**auth("requester"), "If-Match": '"1"'}).status_code == 403
    removal = client.delete(url, headers={**auth("approver"), "If-Match": '"1"'})
    assert removal.status_code == 202 and removal.json["evidence"]["deployment"]["after"] is None
    approve_change(client, auth, removal)
    assert client.get(url, headers=auth("viewer")).headers["ETag"] == '"0"'
    gone = client.delete(url, headers={**auth("approver"), "If-Match": "*"})
    assert gone.status_code == 404
    with services.db.read() as session:
        actions = (
            session.execute(
                select(AuditEventRow.action).where(
                    AuditEventRow.model_name == model, AuditEventRow.action.like("deployment.%")
                )
            )
            .scalars()
            .all()
        )
    assert sorted(actions) == ["deployment.deleted", "deployment.updated"]


def test_split_is_sticky_per_subject_and_each_variant_serves_its_target(
    client, auth, served, services
):
    model, _ = served
    promote(client, auth, model, 2, target_alias="challenger")
    apply_deployment(
        client,
        auth,
        model,
        {
            "variants": [
                {"name": "champion", "target_stage": "Production", "weight": 50},
                {"name": "challenger", "target_alias": "challenger", "weight": 50},
            ],
            "sticky_by": "header:X-Subject-Id",
        },
    )
    services.serving.refresh(model)
    seen = {}
    for i in range(60):
        subject = {"X-Subject-Id": f"customer-{i}"}
        answers = [
            predict(client, auth, model, {"inputs": [ROW]}, headers=subject).json for _ in range(2)
        ]
        assert answers[0]["variant"] == answers[1]["variant"]
        seen[f"customer-{i}"] = answers[0]
    by_variant = {a["variant"]: a["model_version"] for a in seen.values()}
    assert by_variant == {"champion": 1, "challenger": 2}


def fallback_events(services, model):
    with services.db.read() as session:
        return (
            session.execute(
                select(AuditEventRow).where(
                    AuditEventRow.model_name == model, AuditEventRow.action == "serving.fallback"
                )
            )
            .scalars()
            .all()
        )


@pytest.mark.parametrize("breakage", ["unloadable", "raising"])
def test_fallback_to_the_previous_holder_when_the_new_one_fails(
    client, auth, served, services, mlflow_client, breakage
):
    model, estimators = served
    run_id = (log_unloadable if breakage == "unloadable" else log_raising)(mlflow_client)
    services.models.register_version(CTX, model, run_id, "model", None, {})
    if breakage == "raising":
        # A cloudpickled PythonModel is code: Production takes it only when allowed.
        allowed = client.put(
            f"/api/v1/models/{model}/policy",
            headers=auth("admin"),
            json={"rules": [], "allow_unsafe_artifacts": True},
        )
        assert allowed.status_code == 200, allowed.json
    promote(client, auth, model, 3)
    services.serving.refresh(model)
    for _ in range(3):
        answer = predict(client, auth, model, {"dataframe_records": ROWS})
        assert answer.status_code == 200, answer.json
        assert answer.json["fallback"] is True and answer.json["model_version"] == 1
        assert answer.json["served_from"] == "Production"
        assert answer.json["predictions"] == expected(estimators[1], ROWS)
    (event,) = fallback_events(services, model)  # one per model, version and minute
    assert event.model_version == 3 and event.after["served_by_version"] == 1
    assert services.serving.writer.flush(10)
    with services.db.read() as session:
        flags = session.execute(
            select(PredictionRow.fallback, PredictionRow.model_version).where(
                PredictionRow.model_name == model
            )
        ).all()
    assert set(flags) == {(True, 1)}

    off = apply_deployment(
        client,
        auth,
        model,
        {
            "variants": [{"name": "main", "target_stage": "Production", "weight": 100}],
            "fallback": False,
        },
    )
    assert off.json["fallback"] is False
    services.serving.refresh(model)
    refused = predict(client, auth, model, {"dataframe_records": ROWS})
    assert refused.status_code == 503 and refused.json["code"] == "model-unavailable"
    assert services.serving.writer.flush(10)
    with services.db.read() as session:
        status = session.execute(
            select(PredictionRow.status, PredictionRow.model_version).where(
                PredictionRow.request_id == refused.json["request_id"]
            )
        ).one()
    assert tuple(status) == ("error", 3)


def test_no_fallback_for_a_pinned_version(client, auth, served, services, mlflow_client):
    model, _ = served
    run_id = log_unloadable(mlflow_client)
    services.models.register_version(CTX, model, run_id, "model", None, {})
    promote(client, auth, model, 3, target_alias="canary")
    refused = predict(client, auth, model, {"inputs": ROWS}, query="?version=3")
    assert refused.status_code == 503 and refused.json["model_version"] == 3
    assert fallback_events(services, model) == []


def test_the_log_holds_every_answered_prediction_and_feedback_joins_it(
    client, auth, served, services, identities
):
    model, _ = served
    ids = []
    for row in ROWS:
        answer = predict(client, auth, model, {"dataframe_records": [row]}, role="predictor_only")
        assert answer.status_code == 200
        ids.append(answer.json["request_id"])
    assert services.serving.writer.flush(10)
    with services.db.read() as session:
        logged = (
            session.execute(select(PredictionRow).where(PredictionRow.model_name == model))
            .scalars()
            .all()
        )
    assert sorted(r.request_id for r in logged) == sorted(ids)
    assert {r.principal for r in logged} == {identities["predictor_only"]["name"]}
    assert all(r.model_version == 1 and r.status == "ok" and r.latency_ms > 0 for r in logged)
    assert {r.inputs["dataframe_records"][0]["a"] for r in logged} == {r["a"] for r in ROWS}

    feedback = client.post(
        f"/api/v1/models/{model}/feedback",
        headers=auth("predictor_only"),
        json={
            "items": [{"request_id": i, "actual": 1} for i in ids]
            + [{"request_id": "never-predicted", "actual": 0}]
        },
    )
    assert feedback.status_code == 200, feedback.json
    assert feedback.json == {"accepted": 3, "unknown_request_ids": ["never-predicted"]}
    with services.db.read() as session:
        joined = session.execute(
            select(PredictionRow.request_id, PredictionFeedbackRow.actual)
            .join(
                PredictionFeedbackRow,
                PredictionFeedbackRow.request_id == PredictionRow.request_id,
            )
            .where(PredictionRow.model_name == model)
        ).all()
    assert sorted(joined) == sorted((i, 1) for i in ids)


def test_predictor_tokens_predict_and_nothing_else(client, auth, served):
    model, _ = served
    assert predict(client, auth, model, {"inputs": [ROW]}, role="predictor_only").status_code == 200
    refused = client.get("/api/v1/models", headers=auth("predictor_only"))
    assert refused.status_code == 403 and refused.json["code"] == "forbidden"
    assert client.get("/api/v1/promotions", headers=auth("predictor_only")).status_code == 403
    assert client.post(f"/api/v1/models/{model}/predict", json={"inputs": [ROW]}).status_code == 401


def test_preloaded_deployments_load_at_start_before_ready(client, auth, served, services):
    model, _ = served
    put = apply_deployment(
        client,
        auth,
        model,
        {
            "variants": [{"name": "main", "target_stage": "Production", "weight": 100}],
            "preload": True,
        },
    )
    assert put.json["preload"] is True
    services.serving.cache.clear()
    assert services.serving.cache.peek(model, 1) is None
    services.serving.start()
    assert services.serving.preloaded is True
    assert services.serving.cache.peek(model, 1) is not None
    ready = client.get("/ready")
    assert ready.json["dependencies"]["serving"]["status"] == "ok"


def test_another_process_follows_a_move_through_the_change_counter(client, auth, served, services):
    """What every worker's watcher does, step by step, in a second service instance."""
    from registry_service.services.container import build_services

    model, _ = served
    other = build_services(services.settings)
    try:
        production = next(iter(other.serving.refresh(model).holders))
        assert other.serving.route(model).holders[production] == 1
        other.serving.stop()  # no watcher: each poll below is the test's own
        other.serving._seen_generation = other.serving._current_generation()
        assert other.serving.poll() == []
        promote(client, auth, model, 2)
        assert other.serving.poll() == [model]
        assert other.serving.route(model).holders[production] == 2
        assert other.serving.poll() == []
    finally:
        other.close()


def test_input_the_model_itself_refuses_is_a_422_not_a_fallback(client, auth, served, services):
    model, _ = served
    promote(client, auth, model, 2)
    services.serving.refresh(model)
    nan = predict(client, auth, model, {"dataframe_records": [{"a": None, "b": 0.1}]})
    assert nan.status_code == 422, nan.json
    assert nan.json["errors"][0]["field"] == "dataframe_records"
    assert "NaN" in nan.json["errors"][0]["message"]
    assert fallback_events(services, model) == []  # both versions refused it: not a failure


def test_metrics_count_predictions_and_show_what_is_live(client, auth, served):
    from prometheus_client.parser import text_string_to_metric_families

    model, _ = served
    for _ in range(3):
        assert predict(client, auth, model, {"inputs": [ROW]}).status_code == 200
    assert predict(client, auth, model, {"inputs": [{"a": 1.0}]}).status_code == 422
    scraped = client.get("/metrics")
    assert scraped.status_code == 200 and scraped.content_type.startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(scraped.get_data(as_text=True))
        for s in family.samples
    }

    def prediction_count(status):
        labels = (("model", model), ("status", status), ("variant", "default"), ("version", "1"))
        return samples[("registry_prediction_duration_seconds_count", labels)]

    assert prediction_count("ok") == 3 and prediction_count("invalid") == 1
    assert samples[("registry_serving_version", (("model", model), ("target", "Production")))] == 1
    route = "/api/v1/models/<string:name>/predict"
    http = (("method", "POST"), ("route", route), ("status", "200"))
    assert samples[("registry_http_request_duration_seconds_count", http)] == 3


def test_moves_made_straight_in_mlflow_are_not_served(client, auth, served, mlflow_client):
    """Serving resolves holders from our records: MLflow's own stage and alias moves, and
    the versions they name, answer nothing until a governed step moves them."""
    model, estimators = served
    mlflow_client.transition_model_version_stage(
        model, "2", "Production", archive_existing_versions=True
    )
    mlflow_client.set_registered_model_alias(model, "champion", "2")
    get_services_of(client.application).serving.refresh(model)
    answer = predict(client, auth, model, {"inputs": ROWS})
    assert answer.json["model_version"] == 1
    assert answer.json["predictions"] == expected(estimators[1], ROWS)
    assert (
        predict(client, auth, model, {"inputs": ROWS}, query="?stage=Production").json[
            "model_version"
        ]
        == 1
    )
    by_alias = predict(client, auth, model, {"inputs": ROWS}, query="?alias=champion")
    assert (by_alias.status_code, by_alias.json["code"]) == (404, "target-not-held")
    pinned = predict(client, auth, model, {"inputs": ROWS}, query="?version=2")
    assert (pinned.status_code, pinned.json["code"]) == (403, "version-not-servable")
    assert pinned.json["model_version"] == 2


def test_archived_and_unpromoted_versions_are_refused_on_every_pinned_path(
    client, auth, served, services
):
    model, _ = served
    promote(client, auth, model, 2)  # v2 takes Production; v1 is archived, the fallback
    services.serving.refresh(model)
    assert predict(client, auth, model, {"inputs": ROWS}).json["model_version"] == 2
    # The previous governed holder stays servable: it is the fallback.
    assert predict(client, auth, model, {"inputs": ROWS}, query="?version=1").status_code == 200
    archived = predict(client, auth, model, {"inputs": ROWS}, query="?stage=Archived")
    assert (archived.status_code, archived.json["code"]) == (403, "version-not-servable")
    unknown = predict(client, auth, model, {"inputs": ROWS}, query="?version=9")
    assert (unknown.status_code, unknown.json["code"]) == (404, "version-not-found")
