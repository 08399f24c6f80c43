"""Only governed versions answer traffic: against `registry-service serve` with two
workers, a version a requester just registered is refused on every pinned path, for every
role, before anything loads; once a governed step gives it a target, it answers."""

from __future__ import annotations

import uuid

import requests

from tests.serving_models import log_marker

ROLES = ("viewer", "requester", "approver", "approver2", "admin", "predictor_only")
ROW = [{"a": 0.3, "b": 0.5}]
TENSORS = {"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": [0.3]}]}


def bearer(identities, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {identities[role]['token']}"}


def pinned_calls(url: str, name: str, version: int):
    """Every way to name a version outright, as (method, url, json)."""
    v1 = f"{url}/api/v1/models/{name}/predict"
    v2 = f"{url}/v2/models/{name}/versions/{version}"
    return [
        ("post", f"{v1}?version={version}", {"inputs": ROW}),
        ("post", f"{v1}?stage=Archived", {"inputs": ROW}),
        ("get", v2, None),
        ("get", f"{v2}/ready", None),
        ("post", f"{v2}/infer", TENSORS),
    ]


def test_a_requesters_new_version_never_loads_until_governed(
    live_server, identities, mlflow_client, tmp_path
):
    url = live_server.url
    name = f"marker-{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "loaded"
    requester = bearer(identities, "requester")
    created = requests.post(f"{url}/api/v1/models", headers=requester, json={"name": name})
    assert created.status_code == 201, created.text
    registered = requests.post(
        f"{url}/api/v1/models/{name}/versions",
        headers=requester,
        json={"run_id": log_marker(mlflow_client, marker), "artifact_path": "model"},
        timeout=60,
    )
    assert registered.status_code == 201, registered.text

    answers = []
    # Several rounds, over new connections, so that both workers answer.
    for _ in range(3):
        for role in ROLES:
            for method, call, body in pinned_calls(url, name, 1):
                answer = requests.request(
                    method, call, headers=bearer(identities, role), json=body, timeout=60
                )
                answers.append((role, call, answer.status_code, answer.json().get("code")))
    refused = {(status, code) for _, _, status, code in answers}
    assert refused == {(403, "version-not-servable")}, answers
    assert not marker.exists(), "an ungoverned version was loaded"

    # The same version, once a governed step gives it Staging (one approval), answers:
    # the marker shows that loading it does run its code.
    request = requests.post(
        f"{url}/api/v1/promotions",
        headers=requester,
        json={"model_name": name, "version": 1, "target_stage": "Staging", "reason": "try it"},
        timeout=60,
    )
    assert request.status_code == 201, request.text
    approved = requests.post(
        f"{url}/api/v1/promotions/{request.json()['id']}/approve",
        headers=bearer(identities, "approver"),
        json={},
        timeout=60,
    )
    assert approved.json()["status"] == "executed", approved.text
    answer = requests.post(
        f"{url}/api/v1/models/{name}/predict?version=1",
        headers=bearer(identities, "predictor_only"),
        json={"inputs": ROW},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert marker.exists()
