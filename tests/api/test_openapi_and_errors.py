"""The spec, offline Swagger UI, and problem+json for every failure."""

import re

from registry_service.errors import RegistryError

PROBLEM = "application/problem+json"


def test_spec_declares_bearer_auth_and_every_path(client):
    spec = client.get("/api/openapi.json").json
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert {
        "/api/v1/models",
        "/api/v1/models/{name}",
        "/api/v1/models/{name}/versions",
        "/api/v1/models/{name}/versions/{version}",
        "/api/v1/models/{name}/compare",
        "/api/v1/audit",
        "/health",
        "/ready",
    } <= set(spec["paths"])
    assert spec["paths"]["/health"]["get"]["security"] == []
    post = spec["paths"]["/api/v1/models"]["post"]
    assert {"401", "403", "422"} <= set(post["responses"])
    assert post["summary"] == "Create a registered model"


def test_swagger_ui_page_loads_only_local_assets(client):
    page = client.get("/api/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert not re.search(r"(src|href)=\"(https?:)?//", html)
    assets = re.findall(r"(?:src|href)=\"(/[^\"]+)\"", html)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
    assert '"persistAuthorization": true' in html


def test_every_request_body_has_an_example_and_promotions_come_first(client):
    spec = client.get("/api/openapi.json").json
    bodies = [
        (path, method, op["requestBody"]["content"]["application/json"])
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
        if "requestBody" in op
    ]
    assert len(bodies) >= 13
    missing = [(path, method) for path, method, content in bodies if "example" not in content]
    assert missing == []
    assert [t["name"] for t in spec["tags"]][:2] == ["promotions", "models"]


def test_unknown_route_and_method_are_problems(client, auth):
    missing = client.get("/api/v1/nothing-here", headers=auth())
    assert missing.status_code == 404 and missing.content_type == PROBLEM
    assert missing.json["type"] == "/problems/not-found"
    wrong_method = client.delete("/api/v1/models", headers=auth("admin"))
    assert wrong_method.status_code == 405 and wrong_method.content_type == PROBLEM


def test_unexpected_failure_is_500_problem_without_internals(app, client, auth, monkeypatch):
    from tests.conftest import get_services_of

    def explode(*_args, **_kwargs):
        raise RuntimeError("secret connection string postgres://u:pw@host")

    monkeypatch.setattr(get_services_of(app).models, "get_model", explode)
    app.config["PROPAGATE_EXCEPTIONS"] = False  # behave as in production
    response = client.get("/api/v1/models/anything", headers=auth())
    assert response.status_code == 500 and response.content_type == PROBLEM
    body = response.get_data(as_text=True)
    assert "secret" not in body and "Traceback" not in body
    assert response.json["request_id"] == response.headers["X-Request-ID"]


def test_registry_errors_keep_their_extra_fields(app, client, auth, monkeypatch):
    from tests.conftest import get_services_of

    def refuse(*_args, **_kwargs):
        raise RegistryError("boom", hint="x")

    monkeypatch.setattr(get_services_of(app).models, "get_model", refuse)
    response = client.get("/api/v1/models/anything", headers=auth())
    assert response.status_code == 500 and response.json["hint"] == "x"
