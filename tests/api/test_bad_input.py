"""Input no JSON field, query or path may carry: always a 4xx problem naming the field,
never a 500, and nothing changed in MLflow."""

from __future__ import annotations

import base64
import json

import pytest

from registry_service.domain.paging import encode_token
from registry_service.services.context import Context
from tests.conftest import get_services_of

PROBLEM = "application/problem+json"
CTX = Context(actor="test-setup")


@pytest.fixture
def model(app, model_name, make_run):
    services = get_services_of(app)
    services.models.create_model(CTX, model_name, None, {})
    services.models.register_version(CTX, model_name, make_run(), "model", None, {})
    return model_name


@pytest.fixture
def request_id(client, auth, model):
    response = client.post(
        "/api/v1/promotions",
        headers=auth("requester"),
        json={"model_name": model, "version": 1, "target_stage": "Staging", "reason": "r"},
    )
    assert response.status_code == 201, response.json
    return response.json["id"]


def raw_post(client, auth, path, text, role="admin", content_type="application/json"):
    headers = {**auth(role), "Content-Type": content_type}
    return client.post(path, headers=headers, data=text.encode("utf-8", "surrogatepass"))


def problem(response, status, code=None):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == PROBLEM
    if code:
        assert response.json["code"] == code
    return response.json


def fields(body):
    return {(e["field"], e["location"]) for e in body.get("errors", [])}


@pytest.mark.parametrize(
    ("text", "message"),
    [('"a\\u0000b"', "NUL"), ('"\\ud800"', "surrogate"), ('"ok \\udfff end"', "surrogate")],
)
def test_text_no_database_can_store_is_refused_per_field(client, auth, request_id, text, message):
    for verb in ("comments", "approve", "reject"):
        body = problem(
            raw_post(
                client, auth, f"/api/v1/promotions/{request_id}/{verb}", f'{{"comment": {text}}}'
            ),
            422,
            "validation-error",
        )
        assert fields(body) == {("comment", "json")}
        assert message in body["errors"][0]["message"]
    after = client.get(f"/api/v1/promotions/{request_id}", headers=auth()).json
    assert after["status"] == "pending" and after["comments"] == []


def test_nul_in_model_fields_changes_nothing_in_mlflow(client, auth, model_name, mlflow_client):
    body = problem(
        client.post(
            "/api/v1/models",
            headers=auth("requester"),
            json={"name": model_name, "description": "a\x00b", "tags": {"team": "x\x00"}},
        ),
        422,
    )
    assert fields(body) == {("description", "json"), ("tags.team", "json")}
    assert mlflow_client.search_registered_models(f"name = '{model_name}'") == []


def test_nul_in_queries_and_paths(client, auth, model):
    for path in ("/api/v1/audit?actor=a%00b", "/api/v1/promotions?requester=x%00"):
        body = problem(client.get(path, headers=auth()), 422)
        assert {loc for _, loc in fields(body)} == {"query"}
    assert (
        problem(client.get("/api/v1/models/a%00b", headers=auth()), 422)["errors"][0]["location"]
        == "path"
    )


def test_deeply_nested_json_is_refused(client, auth, request_id):
    path = f"/api/v1/promotions/{request_id}/comments"
    shallow_enough_to_parse = '{"comment": ' + "[" * 100 + "]" * 100 + "}"
    assert (
        "nested deeper"
        in problem(raw_post(client, auth, path, shallow_enough_to_parse), 422)["errors"][0][
            "message"
        ]
    )
    recursion = "[" * 100_000 + "]" * 100_000
    problem(raw_post(client, auth, path, recursion), 400, "bad-request")
    problem(raw_post(client, auth, path, '{"comment": '), 400, "bad-request")


@pytest.mark.parametrize("version", [2**63, 2**31, 1e308, 1.5, True, "1.5", None])
def test_versions_must_be_integers_in_range(client, auth, model, version):
    body = problem(
        client.post(
            "/api/v1/promotions",
            headers=auth("requester"),
            json={
                "model_name": model,
                "version": version,
                "target_stage": "Staging",
                "reason": "r",
            },
        ),
        422,
    )
    assert fields(body) == {("version", "json")}


def test_huge_ids_in_paths_are_not_found(client, auth, model):
    for path in (
        f"/api/v1/models/{model}/versions/{2**63}",
        f"/api/v1/models/{model}/versions/{2**31}",
        f"/api/v1/promotions/{2**40}",
    ):
        problem(client.get(path, headers=auth()), 404)


def test_forged_page_tokens_are_400(client, auth, model):
    upstream = base64.b64encode(json.dumps({"offset": 10**20}).encode()).decode()
    for path, token in (
        ("/api/v1/models", encode_token({"u": upstream, "s": 0})),
        ("/api/v1/promotions", encode_token({"before": 10**20})),
        ("/api/v1/audit", encode_token({"before": -1})),
    ):
        response = client.get(path, headers=auth(), query_string={"page_token": token})
        problem(response, 400, "bad-request")


@pytest.mark.parametrize(
    ("content_type", "text"),
    [
        ("text/plain", "comment=hi"),
        ("application/x-www-form-urlencoded", "comment=hi"),
        ("application/xml", "<comment>hi</comment>"),
    ],
)
def test_bodies_that_are_not_json_are_415(client, auth, request_id, content_type, text):
    path = f"/api/v1/promotions/{request_id}/comments"
    body = problem(raw_post(client, auth, path, text, content_type=content_type), 415)
    assert body["code"] == "unsupported-media-type"


def test_body_field_errors_say_json(client, auth):
    body = problem(
        client.post(
            "/api/v1/promotions",
            headers=auth("requester"),
            json={
                "model_name": "bad name!",
                "version": 1,
                "target_stage": "Staging",
                "reason": "r",
            },
        ),
        422,
    )
    assert fields(body) == {("model_name", "json")}


def test_oversized_body_is_413(client, auth, request_id):
    path = f"/api/v1/promotions/{request_id}/comments"
    text = json.dumps({"comment": "x" * (2 * 1024 * 1024)})
    body = problem(raw_post(client, auth, path, text), 413)
    assert body["status"] == 413


def test_tag_limits_are_below_what_mlflow_takes_in_one_call(
    client, auth, model_name, model, mlflow_client
):
    too_many = {f"k{i}": "v" for i in range(101)}
    problem(
        client.post(
            "/api/v1/models",
            headers=auth("requester"),
            json={"name": model_name + "-x", "tags": too_many},
        ),
        422,
    )
    assert mlflow_client.search_registered_models(f"name = '{model_name}-x'") == []
    for batch in range(5):
        tags = {f"b{batch}-{i}": "v" for i in range(100)}
        patched = client.patch(
            f"/api/v1/models/{model}", headers=auth("requester"), json={"tags": tags}
        )
        assert patched.status_code == 200, patched.json
    over = client.patch(
        f"/api/v1/models/{model}", headers=auth("requester"), json={"tags": {"one-more": "v"}}
    )
    assert "at most 500 tags" in problem(over, 422)["errors"][0]["message"]
    assert "one-more" not in mlflow_client.get_registered_model(model).tags


def test_token_events_do_not_show_the_secret(client, auth, identities):
    events = client.get(
        "/api/v1/audit", headers=auth(), query_string={"action": "token.created"}
    ).json["events"]
    assert events
    for event in events:
        assert "prefix" not in event["after"]
        assert not any(identities[role]["token"][:9] in json.dumps(event) for role in identities)
