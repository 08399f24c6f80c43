"""Registered models: create, read, update, list, with an audit event per write."""

PROBLEM = "application/problem+json"


def audit_events(client, auth, model):
    return client.get(f"/api/v1/audit?model={model}", headers=auth()).json["events"]


def test_create_model_records_audit_event(client, auth, identities, model_name):
    response = client.post(
        "/api/v1/models",
        headers=auth("requester"),
        json={"name": model_name, "description": "fraud scorer", "tags": {"team": "risk"}},
    )
    assert response.status_code == 201
    body = response.json
    assert body["name"] == model_name and body["tags"] == {"team": "risk"}
    assert body["aliases"] == {} and body["latest_versions"] == {}

    [event] = audit_events(client, auth, model_name)
    assert event["action"] == "model.created"
    assert event["actor"] == identities["requester"]["name"]
    assert event["after"]["description"] == "fraud scorer"
    assert event["request_id"] == response.headers["X-Request-ID"]


def test_duplicate_model_is_409(client, auth, model_name):
    client.post("/api/v1/models", headers=auth("requester"), json={"name": model_name})
    response = client.post("/api/v1/models", headers=auth("requester"), json={"name": model_name})
    assert response.status_code == 409
    assert response.content_type == PROBLEM
    assert response.json["code"] == "already-exists"
    assert len(audit_events(client, auth, model_name)) == 1


def test_invalid_model_name_is_422_with_field(client, auth):
    response = client.post(
        "/api/v1/models", headers=auth("requester"), json={"name": "bad name' OR '1'='1"}
    )
    assert response.status_code == 422
    assert response.json["code"] == "validation-error"
    assert response.json["errors"][0]["field"] == "name"


def test_unknown_and_missing_fields_are_422(client, auth):
    response = client.post("/api/v1/models", headers=auth("requester"), json={"nmae": "x"})
    assert response.status_code == 422
    fields = {e["field"]: e["message"] for e in response.json["errors"]}
    assert "Missing" in fields["name"] and "Unknown" in fields["nmae"]


def test_reserved_tag_is_422(client, auth, model_name):
    response = client.post(
        "/api/v1/models",
        headers=auth("requester"),
        json={"name": model_name, "tags": {"mlflow.user": "x"}},
    )
    assert response.status_code == 422
    assert response.json["errors"][0]["field"] == "tags.mlflow.user"


def test_malformed_json_is_400(client, auth):
    response = client.post(
        "/api/v1/models", headers=auth("requester"), data="{nope", content_type="application/json"
    )
    assert response.status_code == 400
    assert response.content_type == PROBLEM


def test_get_missing_model_is_404(client, auth, model_name):
    response = client.get(f"/api/v1/models/{model_name}", headers=auth())
    assert response.status_code == 404
    assert response.json["code"] == "model-not-found"


def test_patch_merges_tags_and_audits_before_after(client, auth, model_name):
    client.post(
        "/api/v1/models",
        headers=auth("requester"),
        json={"name": model_name, "description": "old", "tags": {"team": "risk", "tier": "2"}},
    )
    response = client.patch(
        f"/api/v1/models/{model_name}",
        headers=auth("requester"),
        json={"description": "new", "tags": {"tier": None, "owner": "ana"}},
    )
    assert response.status_code == 200
    assert response.json["description"] == "new"
    assert response.json["tags"] == {"team": "risk", "owner": "ana"}

    event = audit_events(client, auth, model_name)[0]
    assert event["action"] == "model.updated"
    assert event["before"]["tags"] == {"team": "risk", "tier": "2"}
    assert event["after"]["tags"] == {"team": "risk", "owner": "ana"}
    assert event["before"]["description"] == "old"


def test_patch_missing_model_is_404(client, auth, model_name):
    response = client.patch(
        f"/api/v1/models/{model_name}", headers=auth("requester"), json={"description": "x"}
    )
    assert response.status_code == 404


def test_list_filters_by_literal_prefix_and_pages(client, auth, model_name):
    prefix = model_name.replace("-", "_")
    names = [f"{prefix}_a", f"{prefix}_b", f"{prefix}_c", f"{prefix}Xd"]
    for name in names:
        assert (
            client.post(
                "/api/v1/models", headers=auth("requester"), json={"name": name}
            ).status_code
            == 201
        )
    seen, token = [], None
    while True:
        query = f"/api/v1/models?name_prefix={prefix}_&max_results=2"
        if token:
            query += f"&page_token={token}"
        body = client.get(query, headers=auth()).json
        seen.extend(m["name"] for m in body["models"])
        token = body["next_page_token"]
        if not token:
            break
    # '_' is a LIKE wildcard in MLflow; the Xd model must not match.
    assert seen == names[:3]


def test_list_rejects_bad_paging(client, auth):
    assert client.get("/api/v1/models?max_results=0", headers=auth()).status_code == 422
    assert client.get("/api/v1/models?max_results=501", headers=auth()).status_code == 422
    bad = client.get("/api/v1/models?page_token=garbage!", headers=auth())
    assert bad.status_code == 400 and bad.json["code"] == "bad-request"
