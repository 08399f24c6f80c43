"""Model versions: registration with lineage, detail, listing, patching, comparing."""

import math
import uuid

import pytest
from mlflow.entities import Dataset, DatasetInput, InputTag
from sqlalchemy import delete

from registry_service.db.models import VersionLineageRow
from registry_service.domain.entities import Stage
from registry_service.services.context import Context
from tests.conftest import get_services_of


@pytest.fixture
def model(client, auth, model_name):
    response = client.post("/api/v1/models", headers=auth("requester"), json={"name": model_name})
    assert response.status_code == 201
    return model_name


def register(client, auth, model, run_id, **body):
    return client.post(
        f"/api/v1/models/{model}/versions",
        headers=auth("requester"),
        json={"run_id": run_id, **body},
    )


def test_register_records_lineage(client, auth, identities, model, make_run, mlflow_client):
    run_id = make_run(
        params={"lr": "0.01", "depth": "6"},
        metrics={"auc": 0.91},
        tags={
            "mlflow.source.git.commit": "a" * 40,
            "data_version": "2026-11-01",
            "mlflow.source.name": "train.py",
        },
    )
    mlflow_client.log_inputs(
        run_id,
        [
            DatasetInput(
                Dataset("transactions", "d1g35t", "s3", "s3://bucket/tx.parquet"),
                [InputTag("mlflow.data.context", "training")],
            )
        ],
    )

    response = register(client, auth, model, run_id, description="first", tags={"k": "v"})
    assert response.status_code == 201, response.json
    body = response.json
    assert body["version"] == 1 and body["stage"] == "None"
    assert body["source"].endswith("/model") and body["run_id"] == run_id
    assert body["tags"]["k"] == "v"
    assert body["tags"]["registry.registered_by"] == identities["requester"]["name"]
    lineage = body["lineage"]
    assert lineage["recorded"] is True
    assert lineage["git_commit"] == "a" * 40
    assert lineage["data_version"] == "2026-11-01"
    assert lineage["experiment_name"] == "registry-tests"
    assert lineage["params"] == {"lr": "0.01", "depth": "6"}
    assert lineage["metrics"] == {"auc": 0.91}
    assert lineage["datasets"] == [
        {
            "name": "transactions",
            "digest": "d1g35t",
            "source_type": "s3",
            "source": "s3://bucket/tx.parquet",
            "context": "training",
        }
    ]
    assert lineage["registered_by"] == identities["requester"]["name"]

    events = client.get(
        f"/api/v1/audit?model={model}&action=version.registered", headers=auth()
    ).json["events"]
    assert events[0]["model_version"] == 1
    assert events[0]["after"]["lineage"]["git_commit"] == "a" * 40


def test_register_from_mlflow3_logged_model(client, auth, model, make_run, mlflow_client):
    run_id = make_run(log_model=False)
    experiment_id = mlflow_client.get_run(run_id).info.experiment_id
    logged = mlflow_client.create_logged_model(experiment_id, name="clf", source_run_id=run_id)
    response = register(client, auth, model, run_id, artifact_path="clf")
    assert response.status_code == 201, response.json
    assert response.json["source"] == f"models:/{logged.model_id}"
    assert response.json["model_id"] == logged.model_id


def test_register_errors(client, auth, model, make_run):
    missing = register(client, auth, model, uuid.uuid4().hex)
    assert missing.status_code == 404 and missing.json["code"] == "run-not-found"

    malformed = register(client, auth, model, "../../etc")
    assert malformed.status_code == 422 and malformed.json["errors"][0]["field"] == "run_id"

    no_model = register(client, auth, model, make_run(log_model=False))
    assert no_model.status_code == 422
    assert no_model.json["errors"][0]["field"] == "artifact_path"

    failed = register(client, auth, model, make_run(status="FAILED"))
    assert failed.status_code == 409 and failed.json["code"] == "illegal-transition"

    bad_path = register(client, auth, model, make_run(), artifact_path="../x")
    assert bad_path.status_code == 422

    unknown_model = client.post(
        "/api/v1/models/no-such-model-x/versions",
        headers=auth("requester"),
        json={"run_id": make_run()},
    )
    assert unknown_model.status_code == 404 and unknown_model.json["code"] == "model-not-found"

    viewer = client.post(
        f"/api/v1/models/{model}/versions", headers=auth("viewer"), json={"run_id": make_run()}
    )
    assert viewer.status_code == 403
    events = client.get(
        f"/api/v1/audit?model={model}&action=version.registered", headers=auth()
    ).json["events"]
    assert events == []


def test_get_version_shows_live_run_and_lineage(client, auth, model, make_run, mlflow_client):
    run_id = make_run(params={"lr": "0.1"}, metrics={"auc": 0.8})
    register(client, auth, model, run_id)
    mlflow_client.log_metric(run_id, "auc_late", 0.85)
    url = f"/api/v1/models/{model}/versions/1"
    body = client.get(url, headers=auth(), query_string={"include": "run"}).json
    assert body["run"]["metrics"] == {"auc": 0.8, "auc_late": 0.85}
    assert body["lineage"]["metrics"] == {"auc": 0.8}  # as it was at registration
    assert body["run"]["status"] == "FINISHED"
    # Without include=run: the lineage of registration only, one MLflow read.
    plain = client.get(url, headers=auth()).json
    assert plain["run"] is None and plain["lineage"] == body["lineage"]
    bad = client.get(url, headers=auth(), query_string={"include": "everything"})
    assert bad.status_code == 422


def test_version_registered_outside_gets_lineage_from_run(
    client, auth, model, make_run, mlflow_client
):
    run_id = make_run(params={"a": "1"}, tags={"mlflow.source.git.commit": "b" * 40})
    source = mlflow_client.get_run(run_id).info.artifact_uri + "/model"
    mlflow_client.create_model_version(model, source, run_id=run_id)
    lineage = client.get(f"/api/v1/models/{model}/versions/1", headers=auth()).json["lineage"]
    assert lineage["recorded"] is False and lineage["git_commit"] == "b" * 40


def test_recorded_lineage_is_remembered_but_never_for_another_version(
    app, client, auth, model, make_run, mlflow_client, db
):
    first_run = make_run(params={"a": "1"})
    register(client, auth, model, first_run)
    url = f"/api/v1/models/{model}/versions/1"
    assert client.get(url, headers=auth()).json["lineage"]["recorded"] is True
    with db.transaction() as session:  # gone from the table: served from memory
        session.execute(delete(VersionLineageRow).where(VersionLineageRow.model_name == model))
    again = client.get(url, headers=auth()).json
    assert again["lineage"]["recorded"] is True and again["run"] is None
    # The model made again in MLflow numbers its versions from 1: not the same version.
    mlflow_client.delete_registered_model(model)
    mlflow_client.create_registered_model(model)
    second_run = make_run(params={"a": "2"})
    source = mlflow_client.get_run(second_run).info.artifact_uri + "/model"
    mlflow_client.create_model_version(model, source, run_id=second_run)
    fresh = client.get(url, headers=auth()).json
    assert fresh["lineage"]["recorded"] is False and fresh["lineage"]["run_id"] == second_run
    assert fresh["lineage"]["params"] == {"a": "2"}


def test_get_missing_version_is_404(client, auth, model):
    response = client.get(f"/api/v1/models/{model}/versions/9", headers=auth())
    assert response.status_code == 404 and response.json["code"] == "version-not-found"
    assert client.get(f"/api/v1/models/{model}/versions/abc", headers=auth()).status_code == 404


def test_list_versions_pages_and_filters_by_stage(app, client, auth, model, make_run):
    for _ in range(5):
        assert register(client, auth, model, make_run()).status_code == 201
    services = get_services_of(app)
    services.models.transition_stage(Context("t"), model, 2, Stage.STAGING)
    services.models.transition_stage(Context("t"), model, 4, Stage.STAGING, False)

    first = client.get(f"/api/v1/models/{model}/versions?max_results=2", headers=auth()).json
    assert [v["version"] for v in first["versions"]] == [5, 4]
    second = client.get(
        f"/api/v1/models/{model}/versions?max_results=2&page_token={first['next_page_token']}",
        headers=auth(),
    ).json
    assert [v["version"] for v in second["versions"]] == [3, 2]

    staging = client.get(
        f"/api/v1/models/{model}/versions?stage=Staging&max_results=1", headers=auth()
    ).json
    assert [v["version"] for v in staging["versions"]] == [4]
    rest = client.get(
        f"/api/v1/models/{model}/versions?stage=Staging&max_results=1&page_token="
        f"{staging['next_page_token']}",
        headers=auth(),
    ).json
    assert [v["version"] for v in rest["versions"]] == [2]

    bad = client.get(f"/api/v1/models/{model}/versions?stage=Prod", headers=auth())
    assert bad.status_code == 422 and bad.json["errors"][0]["field"] == "stage"
    missing = client.get("/api/v1/models/nope-nope/versions", headers=auth())
    assert missing.status_code == 404


def test_patch_version_audits_change(client, auth, model, make_run):
    register(client, auth, model, make_run(), tags={"a": "1"})
    response = client.patch(
        f"/api/v1/models/{model}/versions/1",
        headers=auth("requester"),
        json={"description": "better", "tags": {"a": None, "b": "2"}},
    )
    assert response.status_code == 200
    assert response.json["description"] == "better"
    assert "a" not in response.json["tags"] and response.json["tags"]["b"] == "2"
    event = client.get(f"/api/v1/audit?model={model}&action=version.updated", headers=auth()).json[
        "events"
    ][0]
    assert event["before"]["tags"]["a"] == "1" and event["after"]["tags"]["b"] == "2"
    missing = client.patch(
        f"/api/v1/models/{model}/versions/7", headers=auth("requester"), json={"description": "x"}
    )
    assert missing.status_code == 404


def test_compare_versions_side_by_side(client, auth, model, make_run):
    register(
        client,
        auth,
        model,
        make_run(params={"lr": "0.1", "depth": "4"}, metrics={"auc": 0.80, "loss": 0.5}),
    )
    register(
        client,
        auth,
        model,
        make_run(params={"lr": "0.05", "depth": "4"}, metrics={"auc": 0.86, "f1": math.nan}),
    )
    response = client.get(f"/api/v1/models/{model}/compare?versions=1,2", headers=auth())
    assert "NaN" not in response.get_data(as_text=True)  # not valid JSON
    body = response.json
    metrics = {m["key"]: m for m in body["metrics"]}
    assert metrics["auc"]["values"] == {"1": 0.80, "2": 0.86}
    assert metrics["auc"]["differs"] is True
    assert metrics["auc"]["delta_from_first"]["2"] == pytest.approx(0.06)
    assert metrics["loss"]["values"] == {"1": 0.5, "2": None}
    assert metrics["f1"]["values"] == {"1": None, "2": None}
    assert metrics["f1"]["delta_from_first"] is None
    params = {p["key"]: p for p in body["params"]}
    assert params["depth"]["differs"] is False and params["lr"]["differs"] is True
    assert [v["version"] for v in body["versions"]] == [1, 2]


@pytest.mark.parametrize("query", ["versions=1", "versions=1,1", "versions=a,b", ""])
def test_compare_rejects_bad_version_lists(client, auth, model, query):
    response = client.get(f"/api/v1/models/{model}/compare?{query}", headers=auth())
    assert response.status_code == 422


def test_compare_missing_version_is_404(client, auth, model, make_run):
    register(client, auth, model, make_run())
    response = client.get(f"/api/v1/models/{model}/compare?versions=1,3", headers=auth())
    assert response.status_code == 404
