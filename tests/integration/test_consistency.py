"""When the audit write fails after MLflow changed, the change is undone and said so."""

import json

import pytest
from sqlalchemy import text

from registry_service.app import create_app
from registry_service.db.database import build_engine
from registry_service.db.migrate import upgrade
from tests.conftest import get_services_of
from tests.rig import create_database


@pytest.fixture
def broken_audit_app(pg_server_url, mlflow_uri, identities, registry_db_url):
    """An app whose audit table vanishes on demand, on its own database."""
    url = create_database(pg_server_url, "broken")
    upgrade(url)
    # Reuse the session's tokens: copy principals and tokens into this database.
    source, target = build_engine(registry_db_url), build_engine(url)
    with source.connect() as src, target.begin() as dst:
        for table in ("principals", "api_tokens"):
            rows = [dict(r._mapping) for r in src.execute(text(f"SELECT * FROM {table}"))]
            cols = ", ".join(rows[0])
            params = ", ".join(f":{c}" for c in rows[0])
            for row in rows:
                if table == "principals":
                    row["roles"] = json.dumps(row["roles"])
                    row["groups"] = json.dumps(row["groups"])
                dst.execute(text(f"INSERT INTO {table} ({cols}) VALUES ({params})"), row)
    source.dispose()
    app = create_app(
        {
            "database_url": url,
            "mlflow_tracking_uri": mlflow_uri,
            "mlflow_registry_uri": mlflow_uri,
            "testing": True,
        }
    )

    def break_audit():
        with target.begin() as conn:
            conn.execute(text("ALTER TABLE audit_events RENAME TO audit_events_gone"))

    yield app, break_audit
    get_services_of(app).close()
    target.dispose()


def test_create_model_is_undone_when_audit_fails(broken_audit_app, auth, model_name, mlflow_client):
    app, break_audit = broken_audit_app
    client = app.test_client()
    break_audit()
    response = client.post("/api/v1/models", headers=auth("requester"), json={"name": model_name})
    assert response.status_code == 500
    assert response.json["code"] == "not-recorded"
    assert response.json["reverted"] is True
    assert "undone" in response.json["detail"]
    assert mlflow_client.search_registered_models(f"name = '{model_name}'") == []


def test_register_version_is_undone_when_audit_fails(
    broken_audit_app, auth, model_name, make_run, mlflow_client
):
    app, break_audit = broken_audit_app
    client = app.test_client()
    assert (
        client.post(
            "/api/v1/models", headers=auth("requester"), json={"name": model_name}
        ).status_code
        == 201
    )
    break_audit()
    response = client.post(
        f"/api/v1/models/{model_name}/versions",
        headers=auth("requester"),
        json={"run_id": make_run()},
    )
    assert response.status_code == 500 and response.json["reverted"] is True
    assert mlflow_client.search_model_versions(f"name = '{model_name}'") == []
