"""Direct-store mode: MLflow's own store read in-process from the MLflow server's
database, artifacts through the server, and a refusal to touch a database whose MLflow
schema differs from the installed mlflow's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import requests
import sqlalchemy as sa
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

from registry_service.app import create_app
from registry_service.domain.entities import Stage
from registry_service.errors import ModelNotFound, VersionNotFound
from registry_service.services.context import Context
from tests.conftest import get_services_of
from tests.rig import create_database
from tests.serving_models import log_sklearn

CTX = Context(actor="test-setup")


def direct(registry_db_url, mlflow_db, server_url, tmp_path):
    return create_app(
        {
            "database_url": registry_db_url,
            "mlflow_tracking_uri": mlflow_db,
            "mlflow_registry_uri": mlflow_db,
            "mlflow_server_url": server_url,
            "data_dir": tmp_path,
            "testing": True,
        }
    )


@pytest.fixture
def direct_app(registry_db_url, mlflow_db_url, mlflow_uri, tmp_path):
    app = direct(registry_db_url, mlflow_db_url, mlflow_uri, tmp_path)
    yield app
    get_services_of(app).close()


def count_http_to(url: str, monkeypatch) -> list[str]:
    calls: list[str] = []
    send = requests.Session.send

    def counting(self, request, **kwargs):
        if request.url.startswith(url):
            calls.append(request.url)
        return send(self, request, **kwargs)

    monkeypatch.setattr(requests.Session, "send", counting)
    return calls


def test_reads_go_to_mlflow_s_database_and_artifacts_through_its_server(
    direct_app, client, auth, model_name, mlflow_client, mlflow_uri, monkeypatch
):
    services = get_services_of(direct_app)
    assert services.gateway.direct and services.gateway.schema_problem is None
    direct_client = direct_app.test_client()
    run_id, estimator = log_sklearn(mlflow_client, 0.5)
    created = direct_client.post(
        "/api/v1/models", headers=auth("requester"), json={"name": model_name}
    )
    assert created.status_code == 201
    registered = direct_client.post(
        f"/api/v1/models/{model_name}/versions", headers=auth("requester"), json={"run_id": run_id}
    )
    assert registered.status_code == 201, registered.json  # the artifact check went via HTTP

    calls = count_http_to(mlflow_uri, monkeypatch)
    mine = direct_client.get(f"/api/v1/models/{model_name}/versions/1", headers=auth("viewer"))
    assert mine.status_code == 200 and calls == []  # no HTTP hop for a read
    theirs = client.get(f"/api/v1/models/{model_name}/versions/1", headers=auth("viewer"))
    assert mine.json == theirs.json  # the remote mode sees the same version

    request = direct_client.post(
        "/api/v1/promotions",
        headers=auth("requester"),
        json={
            "model_name": model_name,
            "version": 1,
            "target_stage": "Production",
            "reason": "direct",
        },
    ).json
    for approver in ("approver", "approver2"):
        done = direct_client.post(
            f"/api/v1/promotions/{request['id']}/approve", headers=auth(approver), json={}
        )
    assert done.json["status"] == "executed"
    assert mlflow_client.get_model_version(model_name, "1").current_stage == "Production"

    rows = [{"a": 0.9, "b": 0.3}, {"a": 0.2, "b": 0.3}]
    answer = direct_client.post(
        f"/api/v1/models/{model_name}/predict",
        headers=auth("viewer"),
        json={"dataframe_records": rows},
    )
    assert answer.status_code == 200, answer.json
    assert answer.json["predictions"] == [int(p) for p in estimator.predict(pd.DataFrame(rows))]
    assert any("/mlflow-artifacts/" in c or "artifacts" in c for c in calls)


def test_the_direct_version_read_matches_mlflow_s_own_store(direct_app, model_name, mlflow_client):
    gateway = get_services_of(direct_app).gateway
    assert gateway.direct_sql is not None
    mlflow_client.create_registered_model(model_name)
    for i in range(4):
        run_id, _ = log_sklearn(mlflow_client, 0.5 + i / 10)
        mlflow_client.create_model_version(
            model_name, f"runs:/{run_id}/model", run_id, tags={"i": str(i), "team": "risk"}
        )
    mlflow_client.transition_model_version_stage(model_name, "2", "Production")
    mlflow_client.transition_model_version_stage(model_name, "3", "Archived")
    mlflow_client.set_registered_model_alias(model_name, "champion", "2")
    mlflow_client.set_registered_model_alias(model_name, "shadow", "2")
    mlflow_client.set_registered_model_alias(model_name, "challenger", "4")
    mlflow_client.update_model_version(model_name, "4", description="a note")
    mlflow_client.delete_model_version(model_name, "1")

    for version in (2, 3, 4):
        fast = gateway.get_model_version(model_name, version)
        store = gateway._version(gateway.client.get_model_version(model_name, str(version)))
        assert fast == store, version
    assert gateway.get_model_version(model_name, 2).aliases == ["champion", "shadow"]
    for missing in (1, 5, 2**31 - 1):
        with pytest.raises(VersionNotFound):
            gateway.get_model_version(model_name, missing)
    with pytest.raises(VersionNotFound):
        gateway.get_model_version("no-such-model", 1)

    # Every version of the model, as MLflow's own version search gives them.
    searched = [
        gateway._version(mv)
        for mv in gateway.client.search_model_versions(
            f"name = '{model_name}'", order_by=["version_number DESC"]
        )
    ]
    assert gateway.all_versions(model_name) == searched
    assert [v.version for v in searched] == [4, 3, 2]
    assert gateway.versions_in_stage(model_name, Stage.PRODUCTION) == [2]
    mlflow_client.create_registered_model(f"{model_name}-empty")
    assert gateway.all_versions(f"{model_name}-empty") == []
    with pytest.raises(ModelNotFound):
        gateway.all_versions("no-such-model")


@pytest.fixture
def stale_mlflow_db(pg_server_url, tmp_path):
    url = create_database(pg_server_url, "mlflow_stale")
    SqlAlchemyStore(url, str(tmp_path / "artifacts")).engine.dispose()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0000oldrev'"))
    engine.dispose()
    return url


def test_a_schema_mismatch_is_refused_at_start_and_ready_says_why(
    registry_db_url, stale_mlflow_db, mlflow_uri, auth, tmp_path
):
    app = direct(registry_db_url, stale_mlflow_db, mlflow_uri, tmp_path)
    try:
        client = app.test_client()
        ready = client.get("/ready")
        assert ready.status_code == 503
        detail = ready.json["dependencies"]["mlflow"]["detail"]
        assert "0000oldrev" in detail and "expects" in detail
        refused = client.get("/api/v1/models", headers=auth("viewer"))
        assert refused.status_code == 503 and refused.json["code"] == "mlflow-unavailable"
    finally:
        get_services_of(app).close()

    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "MLFLOW_"))}
    env.update(
        REGISTRY_DATABASE_URL=registry_db_url,
        MLFLOW_TRACKING_URI=stale_mlflow_db,
        REGISTRY_MLFLOW_SERVER_URL=mlflow_uri,
        REGISTRY_DATA_DIR=str(tmp_path),
    )
    serve = subprocess.run(
        [str(Path(sys.executable).parent / "registry-service"), "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert serve.returncode != 0
    assert "refusing to start" in serve.stderr and "0000oldrev" in serve.stderr


def test_an_empty_database_is_refused_and_left_empty(
    registry_db_url, pg_server_url, mlflow_uri, tmp_path
):
    empty = create_database(pg_server_url, "not_mlflow")
    app = direct(registry_db_url, empty, mlflow_uri, tmp_path)
    try:
        ready = app.test_client().get("/ready")
        assert "no MLflow schema" in ready.json["dependencies"]["mlflow"]["detail"]
    finally:
        get_services_of(app).close()
    engine = sa.create_engine(empty)
    assert sa.inspect(engine).get_table_names() == []  # nothing was created there
    engine.dispose()


def test_the_direct_stage_move_matches_mlflow_s_own_store(direct_app, model_name, mlflow_client):
    """The same moves on two identical models, ours through plain statements and the
    other through MLflow's SqlAlchemyStore, leave MLflow reading the same registry."""
    gateway = get_services_of(direct_app).gateway
    assert gateway.direct_sql is not None
    store = gateway.client._get_registry_client()
    ours, theirs = f"{model_name}-ours", f"{model_name}-theirs"
    run_id, _ = log_sklearn(mlflow_client, 0.5)
    for name in (ours, theirs):
        mlflow_client.create_registered_model(name)
        for i in range(5):
            mlflow_client.create_model_version(
                name, f"runs:/{run_id}/model", run_id, tags={"i": str(i)}
            )
        for version, stage in ((1, "Production"), (2, "Production"), (3, "Staging")):
            mlflow_client.transition_model_version_stage(name, str(version), stage)
        mlflow_client.set_registered_model_alias(name, "champion", "4")
        mlflow_client.delete_model_version(name, "5")

    def registry(name):
        model = mlflow_client.get_registered_model(name)
        versions = {
            int(v.version): (v.current_stage, v.last_updated_timestamp)
            for v in mlflow_client.search_model_versions(f"name = '{name}'")
        }
        return model, versions

    def same(a, b):
        (model_a, versions_a), (model_b, versions_b) = a, b
        assert {v: s for v, (s, _) in versions_a.items()} == {
            v: s for v, (s, _) in versions_b.items()
        }
        assert sorted((v.version, v.current_stage) for v in model_a.latest_versions) == sorted(
            (v.version, v.current_stage) for v in model_b.latest_versions
        )

    for version, stage, archive in ((4, Stage.PRODUCTION, True), (3, Stage.PRODUCTION, False)):
        before, untouched = registry(ours)
        moved = gateway.transition_stage(ours, version, stage, archive)
        expected = store.transition_model_version_stage(
            theirs, str(version), stage.value, archive_existing_versions=archive
        )
        after = registry(ours)
        same(after, registry(theirs))
        mine, reference = moved.version, gateway._version(expected)
        assert (mine.version, mine.stage, mine.tags, mine.aliases, mine.source) == (
            reference.version,
            reference.stage,
            reference.tags,
            reference.aliases,
            reference.source,
        )
        assert mine.run_id == reference.run_id and mine.model_id == reference.model_id
        # Each version the move wrote, and the model, carry the move's time; no other.
        written = {version, *moved.archived}
        assert after[0].last_updated_timestamp > before.last_updated_timestamp
        for v, (_, updated) in after[1].items():
            if v in written:
                assert updated == after[0].last_updated_timestamp, v
            else:
                assert updated == untouched[v][1], v
        assert moved.archived == ([1, 2] if archive else [])
    assert [registry(ours)[1][v][0] for v in (1, 2, 3, 4)] == [
        "Archived",
        "Archived",
        "Production",
        "Production",
    ]

    unchanged = registry(ours)
    for missing in (5, 6):  # deleted, never created
        with pytest.raises(VersionNotFound):
            gateway.transition_stage(ours, missing, Stage.STAGING, True)
    with pytest.raises(VersionNotFound):
        gateway.transition_stage(f"{model_name}-none", 1, Stage.STAGING, True)
    now = registry(ours)
    assert now[1] == unchanged[1]
    assert now[0].last_updated_timestamp == unchanged[0].last_updated_timestamp
