"""Experiments and runs over REST, against a real MLflow server."""

from __future__ import annotations

import math
import uuid

import pytest


@pytest.fixture
def experiment(mlflow_client, make_run):
    """An experiment with four finished runs of different quality, one failed, one bare."""
    name = f"churn-search-{uuid.uuid4().hex[:8]}"
    runs = {}
    for label, auc, depth in (("a", 0.81, 3), ("b", 0.86, 5), ("c", 0.84, 4), ("d", 0.79, 2)):
        runs[label] = make_run(
            params={"depth": depth},
            metrics={"auc": auc, "loss": 1 - auc},
            tags={"team": "risk" if label in "ab" else "growth"},
            log_model=False,
            experiment=name,
        )
    runs["failed"] = make_run(
        metrics={"auc": 0.99}, log_model=False, status="FAILED", experiment=name
    )
    runs["bare"] = make_run(log_model=False, experiment=name)
    exp_id = mlflow_client.get_experiment_by_name(name).experiment_id
    return {"id": exp_id, "name": name, "runs": runs}


def test_list_experiments_by_prefix_with_paging(client, auth, experiment, mlflow_client):
    twin = mlflow_client.create_experiment(experiment["name"] + "-twin")
    prefix = experiment["name"]
    first = client.get(
        "/api/v1/experiments",
        query_string={"name_prefix": prefix, "max_results": 1},
        headers=auth(),
    )
    assert first.status_code == 200
    assert [e["name"] for e in first.json["experiments"]] == [prefix]
    assert first.json["experiments"][0]["experiment_id"] == experiment["id"]
    assert first.json["experiments"][0]["lifecycle_stage"] == "active"
    second = client.get(
        "/api/v1/experiments",
        query_string={"name_prefix": prefix, "page_token": first.json["next_page_token"]},
        headers=auth(),
    )
    assert [e["experiment_id"] for e in second.json["experiments"]] == [twin]
    assert second.json["next_page_token"] is None


def test_find_an_experiment_by_exact_name(client, auth, mlflow_client):
    odd = f"team's 100% /exp-{uuid.uuid4().hex[:6]}"
    exp_id = mlflow_client.create_experiment(odd)
    found = client.get("/api/v1/experiments", query_string={"name": odd}, headers=auth())
    assert found.status_code == 200
    assert [e["experiment_id"] for e in found.json["experiments"]] == [exp_id]
    mlflow_client.delete_experiment(exp_id)
    for view, expected in (("active", []), ("deleted", [exp_id]), ("all", [exp_id])):
        resp = client.get(
            "/api/v1/experiments", query_string={"name": odd, "view": view}, headers=auth()
        )
        assert [e["experiment_id"] for e in resp.json["experiments"]] == expected, view
    absent = client.get("/api/v1/experiments", query_string={"name": odd + "x"}, headers=auth())
    assert absent.json == {"experiments": [], "next_page_token": None}


def test_experiment_list_refuses_a_prefix_that_would_bend_the_filter(client, auth):
    resp = client.get(
        "/api/v1/experiments", query_string={"name_prefix": "x' OR name LIKE '"}, headers=auth()
    )
    assert resp.status_code == 422
    assert resp.json["type"].endswith("/validation-error")
    assert resp.json["errors"][0]["field"] == "name_prefix"


def test_runs_ordered_by_metric_filtered_and_paged(client, auth, experiment):
    runs = experiment["runs"]
    url = f"/api/v1/experiments/{experiment['id']}/runs"
    ordered = client.get(url, query_string={"order_by": "auc", "max_results": 3}, headers=auth())
    assert ordered.status_code == 200
    # The failed run still lists: filtering by status is the caller's choice.
    assert [r["run_id"] for r in ordered.json["runs"]] == [runs["failed"], runs["b"], runs["c"]]
    rest = client.get(
        url,
        query_string={"order_by": "auc", "page_token": ordered.json["next_page_token"]},
        headers=auth(),
    )
    # The bare run has no auc and comes last.
    assert [r["run_id"] for r in rest.json["runs"]] == [runs["a"], runs["d"], runs["bare"]]

    ascending = client.get(url, query_string={"order_by": "loss", "order": "asc"}, headers=auth())
    # Lowest loss first; the failed and bare runs logged no loss and come last.
    assert [r["run_id"] for r in ascending.json["runs"]][:4] == [
        runs["b"],
        runs["c"],
        runs["a"],
        runs["d"],
    ]

    filtered = client.get(
        url,
        query_string={"filter": "tags.team = 'risk' AND metrics.auc > 0.82", "order_by": "auc"},
        headers=auth(),
    )
    assert [r["run_id"] for r in filtered.json["runs"]] == [runs["b"]]
    assert filtered.json["runs"][0]["params"] == {"depth": "5"}
    assert filtered.json["runs"][0]["metrics"]["auc"] == pytest.approx(0.86)


def test_runs_with_a_bad_filter_or_metric_are_422(client, auth, experiment):
    url = f"/api/v1/experiments/{experiment['id']}/runs"
    bad_filter = client.get(url, query_string={"filter": "metrics.auc >>> 1"}, headers=auth())
    assert bad_filter.status_code == 422
    assert bad_filter.json["errors"][0]["field"] == "filter"
    bad_metric = client.get(url, query_string={"order_by": "auc` DESC --"}, headers=auth())
    assert bad_metric.status_code == 422
    assert bad_metric.json["errors"][0]["field"] == "order_by"
    bad_order = client.get(url, query_string={"order": "sideways"}, headers=auth())
    assert bad_order.status_code == 422


def test_unknown_experiment_is_404(client, auth):
    for url in (
        "/api/v1/experiments/987654321",
        "/api/v1/experiments/987654321/runs",
        "/api/v1/experiments/not%20an%20id/runs",
        "/api/v1/experiments/abc",
        "/api/v1/experiments/abc/runs",
        f"/api/v1/experiments/{'9' * 30}/best-run?metric=auc",
    ):
        resp = client.get(url, headers=auth())
        assert resp.status_code == 404, url
        assert resp.json["type"].endswith("/experiment-not-found")


def test_forged_page_token_is_400(client, auth, experiment):
    import base64
    import json as jsonlib

    inner = base64.b64encode(b'{"offset": "x"}').decode()
    outer = base64.urlsafe_b64encode(jsonlib.dumps({"u": inner, "s": 0}).encode()).decode()
    for url in (f"/api/v1/experiments/{experiment['id']}/runs", "/api/v1/experiments"):
        for token in ("%%%", outer.rstrip("=")):
            resp = client.get(url, query_string={"page_token": token}, headers=auth())
            assert resp.status_code == 400, (url, token, resp.json)
            assert resp.json["type"].endswith("/bad-request")


def test_best_run_skips_unfinished_and_respects_direction(client, auth, experiment):
    runs = experiment["runs"]
    url = f"/api/v1/experiments/{experiment['id']}/best-run"
    best = client.get(url, query_string={"metric": "auc"}, headers=auth())
    assert best.status_code == 200
    assert best.json["run_id"] == runs["b"]
    assert best.json["status"] == "FINISHED"

    lowest_loss = client.get(url, query_string={"metric": "loss", "order": "asc"}, headers=auth())
    assert lowest_loss.json["run_id"] == runs["b"]
    worst = client.get(url, query_string={"metric": "auc", "order": "asc"}, headers=auth())
    assert worst.json["run_id"] == runs["d"]

    any_status = client.get(
        url, query_string={"metric": "auc", "include_unfinished": "true"}, headers=auth()
    )
    assert any_status.json["run_id"] == runs["failed"]
    growth = client.get(
        url, query_string={"metric": "auc", "filter": "tags.team = 'growth'"}, headers=auth()
    )
    assert growth.json["run_id"] == runs["c"]


def test_best_run_when_no_run_has_the_metric_is_404(client, auth, experiment):
    resp = client.get(
        f"/api/v1/experiments/{experiment['id']}/best-run",
        query_string={"metric": "f1"},
        headers=auth(),
    )
    assert resp.status_code == 404
    assert resp.json["type"].endswith("/no-matching-run")
    assert resp.json["metric"] == "f1"
    missing = client.get(f"/api/v1/experiments/{experiment['id']}/best-run", headers=auth())
    assert missing.status_code == 422
    assert missing.json["errors"][0]["field"] == "metric"


def test_get_run_and_its_parent(client, auth, make_run, experiment):
    parent = experiment["runs"]["a"]
    child = make_run(
        tags={"mlflow.parentRunId": parent}, log_model=False, experiment=experiment["name"]
    )
    resp = client.get(f"/api/v1/runs/{child}", headers=auth())
    assert resp.status_code == 200
    assert resp.json["parent_run_id"] == parent
    assert resp.json["experiment_id"] == experiment["id"]
    assert client.get(f"/api/v1/runs/{parent}", headers=auth()).json["parent_run_id"] is None

    for run_id in ("0" * 32, "not-a-run"):
        missing = client.get(f"/api/v1/runs/{run_id}", headers=auth())
        assert missing.status_code == 404
        assert missing.json["type"].endswith("/run-not-found")


def test_compare_runs_side_by_side(client, auth, experiment):
    runs = experiment["runs"]
    ids = [runs["a"], runs["b"], runs["bare"]]
    resp = client.get(
        "/api/v1/runs/compare",
        query_string={"run_ids": ",".join(ids), "metrics": "auc,f1"},
        headers=auth(),
    )
    assert resp.status_code == 200
    assert [r["run_id"] for r in resp.json["runs"]] == ids
    metrics = {row["key"]: row for row in resp.json["metrics"]}
    assert set(metrics) == {"auc", "f1"}  # loss left out; f1 reported as absent
    assert metrics["auc"]["values"][runs["b"]] == pytest.approx(0.86)
    assert metrics["auc"]["values"][runs["bare"]] is None
    assert metrics["auc"]["delta_from_first"][runs["b"]] == pytest.approx(0.05)
    assert metrics["auc"]["differs"] is True
    assert metrics["f1"]["values"] == dict.fromkeys(ids)
    assert metrics["f1"]["delta_from_first"] is None
    depth = next(row for row in resp.json["params"] if row["key"] == "depth")
    assert depth["values"] == {runs["a"]: "3", runs["b"]: "5", runs["bare"]: None}


def test_compare_runs_rejects_bad_lists(client, auth, experiment):
    a = experiment["runs"]["a"]
    for run_ids, status in (
        (a, 422),
        (f"{a},{a}", 422),
        (f"{a},nope", 422),
        (f"{a},{'0' * 32}", 404),
    ):
        resp = client.get("/api/v1/runs/compare", query_string={"run_ids": run_ids}, headers=auth())
        assert resp.status_code == status, run_ids
    assert client.get("/api/v1/runs/compare", headers=auth()).status_code == 422


def test_non_finite_metric_is_sent_as_null(client, auth, make_run, experiment):
    run_id = make_run(metrics={"auc": math.nan}, log_model=False, experiment=experiment["name"])
    resp = client.get(f"/api/v1/runs/{run_id}", headers=auth())
    assert resp.status_code == 200
    assert "NaN" not in resp.get_data(as_text=True)
    assert resp.json["metrics"] == {"auc": None}


def test_experiments_and_runs_need_a_token(client, experiment):
    for url in ("/api/v1/experiments", f"/api/v1/runs/{experiment['runs']['a']}"):
        resp = client.get(url)
        assert resp.status_code == 401
