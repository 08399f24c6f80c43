"""Every API call but the probes needs a bearer token; roles gate writes."""

import pytest

PROBLEM = "application/problem+json"


def test_missing_token_is_401_problem(client):
    response = client.get("/api/v1/models")
    assert response.status_code == 401
    assert response.content_type == PROBLEM
    assert response.json["code"] == "unauthenticated"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer    ", "token"])
def test_malformed_authorization_is_401(client, header):
    response = client.get("/api/v1/models", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json["code"] == "unauthenticated"


def test_invalid_token_is_401(client):
    response = client.get("/api/v1/models", headers={"Authorization": "Bearer rs_forged"})
    assert response.status_code == 401
    assert "not valid" in response.json["detail"]


def test_revoked_token_is_401(client, auth):
    response = client.get("/api/v1/models", headers=auth("revoked"))
    assert response.status_code == 401
    assert "revoked" in response.json["detail"]


def test_viewer_cannot_write(client, auth, model_name):
    response = client.post("/api/v1/models", headers=auth("viewer"), json={"name": model_name})
    assert response.status_code == 403
    assert response.json["code"] == "forbidden"
    assert response.json["required_role"] == "requester"
    assert client.get(f"/api/v1/models/{model_name}", headers=auth("viewer")).status_code == 404


def test_auth_runs_before_body_validation(client):
    response = client.post("/api/v1/models", json={"bogus": 1})
    assert response.status_code == 401


def test_role_check_runs_before_body_validation(client, auth):
    response = client.post("/api/v1/models", headers=auth("viewer"), json={"bogus": 1})
    assert response.status_code == 403


@pytest.mark.parametrize("role", ["viewer", "requester", "approver", "admin"])
def test_whoami_names_the_token_principal(client, auth, identities, role):
    response = client.get("/api/v1/auth/whoami", headers=auth(role))
    assert response.status_code == 200
    assert response.json == {
        "name": identities[role]["name"],
        "roles": [role],
        "groups": [],
        "kind": "human",
    }


def test_actor_comes_from_token_not_body(client, auth, identities, model_name):
    response = client.post(
        "/api/v1/models",
        headers=auth("requester"),
        json={"name": model_name, "actor": "someone-else"},
    )
    assert response.status_code == 422
    client.post("/api/v1/models", headers=auth("requester"), json={"name": model_name})
    events = client.get(f"/api/v1/audit?model={model_name}", headers=auth()).json["events"]
    assert [e["actor"] for e in events] == [identities["requester"]["name"]]
