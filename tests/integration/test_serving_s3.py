"""Serving from an S3 artifact store, as the compose stack does with MinIO: a real
`mlflow server` that hands out s3:// locations, moto's S3 server behind it, and the
service under gunicorn loading the model straight from the bucket."""

from __future__ import annotations

import os
import uuid

import boto3
import pandas as pd
import pytest
import requests
from mlflow.tracking import MlflowClient

from registry_service.db.database import Database
from registry_service.db.migrate import upgrade
from registry_service.services.audit import AuditLog
from registry_service.services.context import Context
from registry_service.services.tokens import TokenService
from tests.integration.conftest import ROOT
from tests.rig import MlflowServer, S3Server, ServiceProcess, create_database
from tests.serving_models import log_sklearn

BUCKET = "models"


@pytest.fixture(scope="module")
def s3_stack(pg_server_url, tmp_path_factory):
    s3 = S3Server.start()
    s3.create_bucket(BUCKET)
    mlflow_server = None
    service = None
    try:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in s3.env.items():
                mp.setenv(key, value)  # this process uploads the model straight to S3
            mlflow_server = MlflowServer.start(
                create_database(pg_server_url, f"mlflow_s3_{uuid.uuid4().hex[:6]}"),
                artifact_args=(
                    "--default-artifact-root",
                    f"s3://{BUCKET}/artifacts",
                    "--no-serve-artifacts",
                ),
                env=s3.env,
            )
            registry_url = create_database(pg_server_url, f"registry_s3_{uuid.uuid4().hex[:6]}")
            upgrade(registry_url)
            db = Database(registry_url)
            tokens = TokenService(db, AuditLog(db))
            issued = {
                who: tokens.create(Context("test-setup"), f"{who}-s3", [role])[0]
                for who, role in (
                    ("requester", "requester"),
                    ("approver", "approver"),
                    ("approver2", "approver"),
                    ("predictor", "predictor"),
                )
            }
            db.dispose()
            env = {
                k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "MLFLOW_"))
            }
            env.update(
                s3.env,
                REGISTRY_DATABASE_URL=registry_url,
                MLFLOW_TRACKING_URI=mlflow_server.uri,
                REGISTRY_DATA_DIR=str(tmp_path_factory.mktemp("s3-data")),
            )
            log = tmp_path_factory.mktemp("s3-logs") / "service.log"
            service = ServiceProcess(env, log, ROOT).start()
            yield s3, mlflow_server, service, issued
    finally:
        if service is not None:
            service.stop()
        if mlflow_server is not None:
            mlflow_server.stop()
        s3.stop()


def test_a_model_in_s3_is_served_after_its_promotion(s3_stack):
    s3, mlflow_server, service, tokens = s3_stack
    client = MlflowClient(mlflow_server.uri)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in s3.env.items():
            mp.setenv(key, value)
        run_id, estimator = log_sklearn(client, 0.5, experiment="s3-serving")
    assert client.get_run(run_id).info.artifact_uri.startswith(f"s3://{BUCKET}/")
    keys = [
        o["Key"]
        for o in boto3.client(
            "s3",
            endpoint_url=s3.url,
            aws_access_key_id=s3.ACCESS_KEY,
            aws_secret_access_key=s3.SECRET_KEY,
            region_name="us-east-1",
        ).list_objects_v2(Bucket=BUCKET)["Contents"]
    ]
    assert any(k.endswith("model/MLmodel") for k in keys)

    def call(method, path, who, **kwargs):
        return requests.request(
            method,
            f"{service.url}/api/v1{path}",
            headers={"Authorization": f"Bearer {tokens[who]}"},
            timeout=60,
            **kwargs,
        )

    assert call("POST", "/models", "requester", json={"name": "churn-s3"}).status_code == 201
    registered = call("POST", "/models/churn-s3/versions", "requester", json={"run_id": run_id})
    assert registered.status_code == 201, registered.text
    request = call(
        "POST",
        "/promotions",
        "requester",
        json={
            "model_name": "churn-s3",
            "version": 1,
            "target_stage": "Production",
            "reason": "first",
        },
    ).json()
    for approver in ("approver", "approver2"):
        done = call("POST", f"/promotions/{request['id']}/approve", approver, json={})
    assert done.json()["status"] == "executed"

    rows = [{"a": 0.9, "b": 0.2}, {"a": 0.1, "b": 0.7}]
    answer = call("POST", "/models/churn-s3/predict", "predictor", json={"dataframe_records": rows})
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_version"] == 1
    assert answer.json()["predictions"] == [int(p) for p in estimator.predict(pd.DataFrame(rows))]
