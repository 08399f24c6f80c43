"""Monitoring over REST on PostgreSQL and a real `mlflow server`, with real scikit-learn
models and real predictions through the service. Every figure is checked against a value
computed here, independently, from the raw prediction log or from the models themselves."""

from __future__ import annotations

import io
import json
import uuid
from datetime import timedelta
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import precision_recall_fscore_support
from sqlalchemy import select

from registry_service.db.models import AuditEventRow, PredictionFeedbackRow, PredictionRow
from registry_service.services.context import Context
from tests.conftest import (
    approve_change,
    expected,
    get_services_of,
    predict,
    promote,
    serve_two_versions,
)
from tests.serving_models import log_regressor, log_sklearn, training_frame

CTX = Context(actor="test-setup")


@pytest.fixture
def served(client, auth, services, model_name, mlflow_client):
    """v1 (a > 0.5) in Production, v2 (a > 0.2) holding alias challenger."""
    return model_name, serve_two_versions(
        client, auth, services, model_name, mlflow_client, target_alias="challenger"
    )


def flush(services):
    assert services.serving.writer.flush(20), "the prediction log did not drain"


def logged(db, model):
    with db.read() as session:
        rows = session.execute(
            select(PredictionRow).where(PredictionRow.model_name == model)
        ).scalars()
        return [
            (r.request_id, r.model_version, r.variant, r.status, r.latency_ms, r.outputs)
            for r in rows
        ]


def feedback(client, auth, model, items):
    answer = client.post(
        f"/api/v1/models/{model}/feedback",
        headers=auth("viewer"),
        json={"items": [{"request_id": r, "actual": a} for r, a in items]},
    )
    assert answer.status_code == 200, answer.json
    return answer.json


def monitoring(client, auth, model, query=""):
    answer = client.get(f"/api/v1/models/{model}/monitoring{query}", headers=auth("viewer"))
    assert answer.status_code == 200, answer.json
    return answer.json


def test_live_figures_match_the_raw_log(client, auth, services, db, served):
    model, estimators = served
    frame = training_frame(seed=3, rows=90)
    truths = {}
    for i in range(0, 90, 3):
        rows = frame.iloc[i : i + 3].to_dict("records")
        answer = predict(client, auth, model, {"dataframe_records": rows})
        assert answer.status_code == 200, answer.json
        # Ground truth for two requests in three: the true class of a > 0.35.
        if i % 9:
            truths[answer.json["request_id"]] = [int(r["a"] > 0.35) for r in rows]
    bad = predict(client, auth, model, {"dataframe_records": [{"a": "x", "b": 1}]})
    assert bad.status_code == 422
    flush(services)
    feedback(client, auth, model, truths.items())

    found = monitoring(client, auth, model, "?since=10m")
    (group,) = [g for g in found["groups"] if g["version"] == 1]
    raw = [r for r in logged(db, model) if r[1] == 1]
    ok = [r for r in raw if r[3] == "ok"]
    assert group["requests"] == len(raw) == 31 and group["ok"] == 30 and group["invalid"] == 1
    assert group["invalid_rate"] == pytest.approx(1 / 31, rel=1e-4)
    latencies = np.array([r[4] for r in ok])
    for key, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        exact = float(np.quantile(latencies, q, method="lower"))
        assert group["latency_ms"][key] == pytest.approx(exact, rel=0.011), key
    predicted = [p for r in ok for p in r[5]]
    assert predicted == expected(estimators[1], frame.to_dict("records"))
    assert group["predictions"]["rows"] == 90
    assert group["predictions"]["mean"] == pytest.approx(np.mean(predicted))
    assert group["predictions"]["classes"]["1"] == pytest.approx(np.mean(predicted), abs=1e-6)

    by_request = {r[0]: r[5] for r in ok}
    y_pred = [p for rid in truths for p in by_request[rid]]
    y_true = [t for rid in truths for t in truths[rid]]
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, average="macro", zero_division=0
    )
    fb = group["feedback"]
    assert fb["requests"] == len(truths) and fb["labelled_rows"] == len(y_true)
    assert fb["accuracy"] == pytest.approx(np.mean(np.array(y_true) == np.array(y_pred)))
    assert (fb["precision"], fb["recall"], fb["f1"]) == (
        pytest.approx(precision),
        pytest.approx(recall),
        pytest.approx(f1),
    )

    # A time series adds up to the window's totals.
    series = monitoring(client, auth, model, "?since=10m&interval=1m&version=1")
    points = series["groups"][0]["series"]
    assert sum(p["requests"] for p in points) == 31
    assert series["interval_seconds"] == 60


def test_regression_figures_from_feedback(client, auth, services, model_name, mlflow_client):
    services.models.create_model(CTX, model_name, None, {})
    run_id, estimator = log_regressor(mlflow_client, slope=3.0)
    services.models.register_version(CTX, model_name, run_id, "model", None, {})
    promote(client, auth, model_name, 1)
    services.serving.refresh(model_name)
    frame = training_frame(seed=4, rows=40)
    items, errors = [], []
    for i in range(0, 40, 4):
        rows = frame.iloc[i : i + 4]
        answer = predict(client, auth, model_name, {"dataframe_split": rows.to_dict("split")})
        assert answer.status_code == 200, answer.json
        actual = (rows.a * 3 + rows.b + 0.25 * ((-1) ** np.arange(4))).tolist()
        items.append((answer.json["request_id"], actual))
        errors.extend(np.array(answer.json["predictions"]) - np.array(actual))
    flush(services)
    feedback(client, auth, model_name, items)
    (group,) = monitoring(client, auth, model_name, "?since=10m")["groups"]
    errors = np.array(errors)
    assert group["feedback"]["regression_rows"] == 40
    assert group["feedback"]["mae"] == pytest.approx(np.mean(np.abs(errors)))
    assert group["feedback"]["rmse"] == pytest.approx(np.sqrt(np.mean(errors**2)))
    assert group["predictions"]["classes"] is None  # a regressor's numbers are no classes
    assert group["predictions"]["std"] == pytest.approx(
        np.std(estimator.predict(frame), ddof=1), rel=1e-6
    )


def test_monitoring_refuses_bad_windows(client, auth, served):
    model, _ = served
    for query, field in (
        ("?since=yesterday", "since"),
        ("?since=2026-01-01T00:00:00", "since"),
        ("?interval=0m", "interval"),
        ("?since=400d&interval=1m", "interval"),
        ("?since=now&until=1h", "until"),
        ("?since=0001-01-01T00:00:00%2B01:00", "since"),
        ("?until=9999-12-31T23:59:59-01:00", "until"),
    ):
        answer = client.get(f"/api/v1/models/{model}/monitoring{query}", headers=auth())
        assert answer.status_code == 422, (query, answer.json)
        assert answer.json["code"] == "validation-error"
        assert field in {e["field"] for e in answer.json["errors"]}, (query, answer.json)
    missing = client.get("/api/v1/models/no-such-model-z/monitoring", headers=auth())
    assert missing.status_code == 404 and missing.json["code"] == "model-not-found"


def test_drift_flags_a_shifted_feature_and_not_an_unshifted_one(client, auth, services, served):
    model, estimators = served
    train = training_frame()
    as_json = client.put(
        f"/api/v1/models/{model}/versions/1/reference",
        headers=auth("approver"),
        json={"records": train.to_dict("records")},
    )
    assert as_json.status_code == 200, as_json.json
    assert as_json.json["source"] == "upload" and as_json.json["profile"]["rows"] == 200
    csv = io.StringIO()
    train.assign(prediction=estimators[2].predict(train)).to_csv(csv, index=False)
    as_csv = client.put(
        f"/api/v1/models/{model}/versions/2/reference?prediction_column=prediction",
        headers={**auth("approver"), "Content-Type": "text/csv"},
        data=csv.getvalue(),
    )
    assert as_csv.status_code == 200, as_csv.json
    assert sorted(as_csv.json["profile"]["features"]) == ["a", "b"]
    assert as_csv.json["profile"]["prediction"]["count"] == 200

    live = training_frame(seed=11, rows=400)
    shifted = live.assign(a=live.a + 0.6)
    for start in range(0, 400, 20):
        for version, frame in ((1, live), (2, shifted)):
            rows = frame.iloc[start : start + 20].to_dict("records")
            answer = predict(
                client, auth, model, {"dataframe_records": rows}, query=f"?version={version}"
            )
            assert answer.status_code == 200, answer.json
    flush(services)
    report = client.get(f"/api/v1/models/{model}/drift?since=10m", headers=auth())
    assert report.status_code == 200, report.json
    by_version = {v["version"]: v for v in report.json["versions"]}
    assert by_version[1]["verdict"]["drift"] is False, by_version[1]
    # a moved, b did not; v2's answers moved with a (v2 says 1 when a > 0.2).
    assert by_version[2]["verdict"]["drifted_features"] == ["__prediction__", "a"]
    a = by_version[2]["features"]["a"]
    assert a["psi_exceeded"] and a["significant"] and a["test"] == "ks"
    assert not by_version[2]["features"]["b"]["drifted"]
    assert by_version[2]["prediction"]["drifted"] is True
    assert by_version[2]["reference"]["created_at"].endswith("+00:00")
    assert report.json["thresholds"] == {"psi": 0.2, "p_value": 0.01}

    # The KS statistic of the sampled a values against the reference, by hand.
    sampled = by_version[2]["sampled_rows"]
    assert sampled == 400
    ks = sps.ks_2samp(shifted.a, train.a).statistic
    assert a["statistic"] == pytest.approx(ks, abs=0.1)


def test_reference_uploads_refuse_bad_input(client, auth, served):
    model, _ = served
    url = f"/api/v1/models/{model}/versions/1/reference"
    for headers, kwargs, status in (
        ({"Content-Type": "text/csv"}, {"data": "a,b\n"}, 422),
        ({"Content-Type": "text/csv"}, {"data": b"a,b\n\xff\xfe,1\n"}, 400),
        ({"Content-Type": "text/csv"}, {"data": "a,b\nx\x00y,1\n"}, 400),
        ({"Content-Type": "text/plain"}, {"data": "a,b\n1,2\n"}, 415),
        ({}, {"json": {"records": []}}, 422),
        ({}, {"json": {"records": [{"a": 1}], "predictions": [1, 2]}}, 422),
        ({}, {"json": {"records": [{"a": None}]}}, 422),
        ({"Content-Type": "text/csv"}, {"data": "a,a\n1,2\n"}, 422),
        ({"Content-Type": "text/csv"}, {"data": "a,b\n1,2\n3\n"}, 422),
        ({}, {"json": {"records": [{f"f{i}": 1} for i in range(600)]}}, 422),
    ):
        answer = client.put(url, headers={**auth("approver"), **headers}, **kwargs)
        assert answer.status_code == status, (kwargs, answer.json)
        assert answer.headers["Content-Type"] == "application/problem+json"
    viewer = client.put(url, headers=auth("viewer"), json={"records": [{"a": 1}]})
    assert viewer.status_code == 403
    none_yet = client.get(f"/api/v1/models/{model}/versions/2/reference", headers=auth())
    assert none_yet.status_code == 404


def test_a_profile_logged_with_the_run_becomes_the_reference(
    client, auth, services, model_name, mlflow_client
):
    from registry_service.sdk.tracking import TrackedRun

    services.models.create_model(CTX, model_name, None, {})
    run_id, estimator = log_sklearn(mlflow_client, 0.5)
    frame = training_frame()
    # The training code's handle on the run the model was logged in.
    run = TrackedRun(SimpleNamespace(client=mlflow_client), run_id, "0")
    profile = run.log_dataset_profile(frame, predictions=estimator.predict(frame))
    services.models.register_version(CTX, model_name, run_id, "model", None, {})
    answer = client.get(f"/api/v1/models/{model_name}/versions/1/reference", headers=auth())
    assert answer.status_code == 200, answer.json
    assert answer.json["source"] == "run-profile"
    assert answer.json["profile"]["features"]["a"]["quantiles"] == pytest.approx(
        profile["features"]["a"]["quantiles"]
    )


def _ab_round(client, auth, model, rows, truth):
    """One prediction per subject; returns [(request_id, variant, prediction, actual)]."""
    out = []
    for i, row in enumerate(rows):
        answer = predict(
            client,
            auth,
            model,
            {"dataframe_records": [row]},
            headers={"X-Subject": uuid.uuid4().hex},
        )
        assert answer.status_code == 200, answer.json
        out.append(
            (
                answer.json["request_id"],
                answer.json["variant"],
                answer.json["predictions"][0],
                truth(i, row, answer.json),
            )
        )
    return out


def start_ab_test(client, auth, model, body) -> int:
    """Request an A/B test and approve its split (Production's quorum); the test's id."""
    requested = client.post(f"/api/v1/models/{model}/ab-tests", headers=auth("approver"), json=body)
    done = approve_change(client, auth, requested)
    assert done.json["status"] == "executed", done.json
    get_services_of(client.application).serving.refresh(model)
    return done.json["outcome"]["ab_test_id"]


def test_ab_test_names_the_better_challenger_and_opens_a_request(
    client, auth, services, db, served
):
    model, _ = served
    test_id = start_ab_test(
        client,
        auth,
        model,
        {
            "champion": {"target_stage": "Production"},
            "challenger": {"target_alias": "challenger"},
            "challenger_share": 50,
            "metric": "accuracy",
            "min_samples": 40,
            "sticky_by": "header:X-Subject",
        },
    )
    started = client.get(f"/api/v1/models/{model}/ab-tests/{test_id}", headers=auth())
    assert started.json["status"] == "running"
    assert started.json["champion"]["version"] == 1 and started.json["challenger"]["version"] == 2
    split = client.get(f"/api/v1/models/{model}/deployment", headers=auth())
    assert [v["weight"] for v in split.json["variants"]] == [50, 50]
    again = client.post(
        f"/api/v1/models/{model}/ab-tests",
        headers=auth("approver"),
        json={
            "champion": {"target_stage": "Production"},
            "challenger": {"target_alias": "challenger"},
        },
    )
    assert again.status_code == 409 and again.json["code"] == "conflict"

    rng = np.random.default_rng(12)
    # Where the two disagree (0.28 < a < 0.42) the truth sides with v2 four times in five.
    rows = [
        {"a": float(a), "b": float(b)}
        for a, b in zip(rng.uniform(0.28, 0.42, 240), rng.random(240), strict=True)
    ]
    results = _ab_round(client, auth, model, rows, lambda i, row, ans: int(i % 5 != 0))
    early = client.get(f"/api/v1/models/{model}/ab-tests/{test_id}", headers=auth())
    assert early.json["result"]["decision"] == "need-more-samples"
    flush(services)
    feedback(client, auth, model, [(r[0], r[3]) for r in results])

    analysed = client.get(f"/api/v1/models/{model}/ab-tests/{test_id}", headers=auth()).json
    result = analysed["result"]
    # Independently: successes per variant from the raw log and the feedback table.
    with db.read() as session:
        joined = session.execute(
            select(PredictionRow.variant, PredictionRow.outputs, PredictionFeedbackRow.actual)
            .join(
                PredictionFeedbackRow, PredictionFeedbackRow.request_id == PredictionRow.request_id
            )
            .where(PredictionRow.model_name == model)
        ).all()
    counts = {side: [0, 0] for side in ("champion", "challenger")}
    for variant, outputs, actual in joined:
        counts[variant][0] += int(outputs[0] == actual)
        counts[variant][1] += 1
    table = [[s, n - s] for s, n in counts.values()]
    _, p_value, _, _ = sps.chi2_contingency(table, correction=False)
    assert result["test"] == "two-proportion z-test"
    assert result["p_value"] == pytest.approx(p_value, rel=1e-6)
    for side in ("champion", "challenger"):
        s, n = counts[side]
        assert result[side]["samples"] == n
        assert result[side]["metric"]["value"] == pytest.approx(s / n, abs=1e-6)
        low, high = result[side]["metric"]["ci95"]
        assert low < s / n < high
    assert result["decision"] == "challenger-better"

    concluded = client.post(
        f"/api/v1/models/{model}/ab-tests/{test_id}/conclude",
        headers=auth("approver"),
        json={"reason": "enough data"},
    )
    assert concluded.status_code == 200, concluded.json
    assert concluded.json["status"] == "concluded"
    request_id = concluded.json["promotion_request_id"]
    request = client.get(f"/api/v1/promotions/{request_id}", headers=auth()).json
    assert request["status"] == "pending" and request["version"] == 2
    assert request["target_stage"] == "Production"
    assert request["evidence"]["ab_test"]["decision"] == "challenger-better"
    restored = client.get(f"/api/v1/models/{model}/deployment", headers=auth())
    assert restored.json["is_default"] is True
    twice = client.post(
        f"/api/v1/models/{model}/ab-tests/{test_id}/conclude", headers=auth("approver"), json={}
    )
    assert twice.status_code == 409
    with db.read() as session:
        actions = set(
            session.execute(
                select(AuditEventRow.action).where(AuditEventRow.model_name == model)
            ).scalars()
        )
    assert {
        "abtest.started",
        "abtest.concluded",
        "deployment.updated",
        "deployment.deleted",
    } <= actions


def test_ab_test_with_equal_sides_finds_no_difference(client, auth, services, served):
    model, _ = served
    test_id = start_ab_test(
        client,
        auth,
        model,
        {
            "champion": {"target_stage": "Production"},
            "challenger": {"target_alias": "challenger"},
            "metric": "accuracy",
            "min_samples": 20,
            "sticky_by": "header:X-Subject",
        },
    )
    seen = {"champion": 0, "challenger": 0}

    def alternate(i, row, answer):
        # Each side right exactly every other time: 50% against 50%.
        side = answer["variant"]
        seen[side] += 1
        prediction = answer["predictions"][0]
        return prediction if seen[side] % 2 else 1 - prediction

    rows = training_frame(seed=13, rows=120).to_dict("records")
    results = _ab_round(client, auth, model, rows, alternate)
    flush(services)
    feedback(client, auth, model, [(r[0], r[3]) for r in results])
    result = client.get(f"/api/v1/models/{model}/ab-tests/{test_id}", headers=auth()).json["result"]
    assert result["decision"] == "no-difference", result
    assert result["p_value"] > 0.5


def test_alerts_fire_and_resolve_with_audited_figures(client, auth, services, db, served):
    model, _ = served

    def set_threshold(ms):
        answer = client.put(
            f"/api/v1/models/{model}/policy",
            headers=auth("admin"),
            json={
                "rules": [],
                "monitoring": {
                    "alerts": [{"name": "slow", "metric": "latency_p95_ms", "threshold": ms}]
                },
            },
        )
        assert answer.status_code == 200, answer.json
        assert answer.json["monitoring"]["alerts"][0]["threshold"] == ms

    for _ in range(5):
        assert (
            predict(client, auth, model, {"dataframe_records": [{"a": 0.3, "b": 0.2}]}).status_code
            == 200
        )
    flush(services)
    set_threshold(0.001)
    fired = client.post(f"/api/v1/alerts/evaluate?model_name={model}", headers=auth("approver"))
    assert fired.status_code == 200, fired.json
    (alert,) = fired.json
    assert alert["state"] == "firing" and alert["rule"] == "slow"
    assert alert["figures"]["value"] > 0.001 and alert["figures"]["samples"] == 5
    again = client.post(f"/api/v1/alerts/evaluate?model_name={model}", headers=auth("approver"))
    assert again.json == []  # still firing: no second event
    set_threshold(1e6)
    resolved = client.post(f"/api/v1/alerts/evaluate?model_name={model}", headers=auth("approver"))
    assert [a["state"] for a in resolved.json] == ["resolved"]
    listed = client.get(f"/api/v1/alerts?model_name={model}&state=resolved", headers=auth())
    assert [a["id"] for a in listed.json] == [alert["id"]]
    with db.read() as session:
        events = session.execute(
            select(AuditEventRow.action, AuditEventRow.after)
            .where(AuditEventRow.model_name == model, AuditEventRow.action.like("alert.%"))
            .order_by(AuditEventRow.seq)
        ).all()
    assert [e[0] for e in events] == ["alert.firing", "alert.resolved"]
    assert events[0][1]["threshold"] == 0.001 and events[1][1]["threshold"] == 1e6
    viewer = client.post("/api/v1/alerts/evaluate", headers=auth("viewer"))
    assert viewer.status_code == 403


def test_an_accuracy_alert_rolls_production_back_under_break_glass(client, auth, services, served):
    model, _ = served
    policy = client.put(
        f"/api/v1/models/{model}/policy",
        headers=auth("admin"),
        json={
            "rules": [{"target_stage": "Production", "required_approvals": 2, "break_glass": True}],
            "monitoring": {
                "alerts": [
                    {
                        "name": "wrong",
                        "metric": "accuracy",
                        "threshold": 0.9,
                        "min_samples": 10,
                        "rollback": True,
                    }
                ]
            },
        },
    )
    assert policy.status_code == 200, policy.json
    promote(client, auth, model, 2)  # v2 takes Production from v1
    services.serving.refresh(model)
    items = []
    for row in training_frame(seed=14, rows=12).to_dict("records"):
        answer = predict(client, auth, model, {"dataframe_records": [row]})
        assert answer.json["model_version"] == 2
        items.append((answer.json["request_id"], 1 - answer.json["predictions"][0]))
    flush(services)
    feedback(client, auth, model, items)
    fired = client.post(f"/api/v1/alerts/evaluate?model_name={model}", headers=auth("approver"))
    (alert,) = fired.json
    assert alert["figures"]["value"] == 0 and alert["figures"]["version"] == 2
    request = client.get(f"/api/v1/promotions/{alert['rollback_request_id']}", headers=auth()).json
    assert request["kind"] == "rollback" and request["status"] == "executed"
    assert request["evidence"]["alert"]["rule"]["name"] == "wrong"
    versions = client.get(f"/api/v1/models/{model}", headers=auth()).json
    assert versions["latest_versions"]["Production"] == 1


def test_metrics_carry_the_state_gauges(client, auth, services, served):
    from prometheus_client.parser import text_string_to_metric_families

    model, _ = served
    client.put(
        f"/api/v1/models/{model}/versions/1/reference",
        headers=auth("approver"),
        json={"records": training_frame().to_dict("records")},
    )
    for row in training_frame(seed=15, rows=30).to_dict("records"):
        assert predict(client, auth, model, {"dataframe_records": [row]}).status_code == 200
    flush(services)
    assert services.monitoring.refresh_drift() >= 1
    scraped = client.get("/metrics")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(scraped.get_data(as_text=True))
        for s in family.samples
    }
    assert samples[("registry_database_up", ())] == 1
    assert samples[("registry_mlflow_up", ())] == 1
    assert samples[("registry_audit_chain_length", ())] > 0
    assert samples[("registry_promotion_requests", (("status", "executed"),))] >= 2
    assert samples[("registry_drift_detected", (("model", model), ("version", "1")))] == 0
    assert ("registry_drift_psi", (("feature", "a"), ("model", model), ("version", "1"))) in samples


def test_monitor_and_ab_test_status_commands(cli, auth, client, services, served):
    model, _ = served
    for row in training_frame(seed=16, rows=6).to_dict("records"):
        assert predict(client, auth, model, {"dataframe_records": [row]}).status_code == 200
    flush(services)
    shown = cli("monitor", model, "--since", "10m")
    assert shown.exit_code == 0, shown.output
    header, row = shown.output.splitlines()[1:3]
    assert header.split()[:3] == ["VERSION", "VARIANT", "REQUESTS"]
    assert row.split()[0] == "1" and row.split()[2] == "6"
    as_json = json.loads(cli("monitor", model, "--version", "1", "--json").output)
    assert as_json["groups"][0]["requests"] == 6
    test_id = start_ab_test(
        client,
        auth,
        model,
        {
            "champion": {"target_stage": "Production"},
            "challenger": {"target_alias": "challenger"},
            "min_samples": 10,
        },
    )
    status = cli("ab-test", "status", model, str(test_id))
    assert status.exit_code == 0, status.output
    assert "need-more-samples" in status.output and "challenger" in status.output
    missing = cli("ab-test", "status", model, "999999")
    assert missing.exit_code == 1 and "no A/B test" in missing.output


def test_long_windows_read_hour_rows_and_agree_with_minute_rows(client, auth, services, served):
    from registry_service.db.base import utcnow
    from registry_service.serving.predlog import PredictionRecord

    model, _ = served
    now = utcnow()
    rng = np.random.default_rng(17)
    latencies = []
    # Records as the log writer receives them, spread over the last five hours.
    for i in range(300):
        at = now - timedelta(minutes=float(rng.uniform(1, 300)))
        latency = float(rng.lognormal(2, 0.5))
        latencies.append(latency)
        services.serving.writer.submit(
            PredictionRecord(
                request_id=f"past-{i}",
                model_name=model,
                model_version=1,
                variant=None,
                subject_hash=None,
                principal="test",
                status="ok",
                fallback=False,
                latency_ms=latency,
                inputs={"dataframe_records": [{"a": 0.1, "b": 0.2}]},
                outputs=[i % 2],
                created_at=at,
            )
        )
    flush(services)
    whole = monitoring(client, auth, model, "?since=6h&version=1")["groups"][0]
    assert whole["requests"] == 300 and whole["predictions"]["rows"] == 300
    exact = float(np.quantile(latencies, 0.95, method="lower"))
    assert whole["latency_ms"]["p95"] == pytest.approx(exact, rel=0.011)
    hourly = monitoring(client, auth, model, "?since=6h&version=1&interval=1h")["groups"][0]
    assert sum(p["requests"] for p in hourly["series"]) == 300
    by_minute = monitoring(client, auth, model, "?since=6h&version=1&interval=7m")["groups"][0]
    assert sum(p["requests"] for p in by_minute["series"]) == 300
    assert by_minute["latency_ms"] == whole["latency_ms"]
