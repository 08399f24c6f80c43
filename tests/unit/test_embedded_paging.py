"""Paging over REST on the embedded default, where MLflow's in-process store hands out
page tokens as bytes: every list pages through to its end, never a 500."""

from __future__ import annotations

import pytest

from registry_service.services.context import Context
from tests.conftest import get_services_of
from tests.unit.conftest import embedded_app


@pytest.fixture
def embedded(tmp_path, sqlite_url):
    app = embedded_app(tmp_path, sqlite_url)
    services = get_services_of(app)
    secret, _ = services.tokens.create(Context("setup"), "pager", ["admin"])
    yield app.test_client(), {"Authorization": f"Bearer {secret}"}, services
    services.close()


def pages(client, headers, url, key):
    """Every item of a list, a page of one at a time; the number of pages."""
    items, token, count = [], None, 0
    while True:
        query = {"max_results": 1, **({"page_token": token} if token else {})}
        answer = client.get(url, headers=headers, query_string=query)
        assert answer.status_code == 200, answer.json
        items += answer.json[key]
        count += 1
        token = answer.json["next_page_token"]
        if not token:
            return items, count


def test_every_list_pages_to_its_end(embedded):
    client, headers, services = embedded
    gateway = services.gateway
    experiment = gateway.client.create_experiment("paged")
    runs = [gateway.client.create_run(experiment).info.run_id for _ in range(3)]
    for name in ("paged-a", "paged-b"):
        created = client.post("/api/v1/models", headers=headers, json={"name": name})
        assert created.status_code == 201, created.json
    for _ in range(3):
        gateway.create_model_version("paged-a", "/tmp/model", None, None, {})

    found, count = pages(client, headers, f"/api/v1/experiments/{experiment}/runs", "runs")
    assert sorted(r["run_id"] for r in found) == sorted(runs) and count == 3
    found, _ = pages(client, headers, "/api/v1/models", "models")
    assert [m["name"] for m in found] == ["paged-a", "paged-b"]
    found, _ = pages(client, headers, "/api/v1/models/paged-a/versions", "versions")
    assert [v["version"] for v in found] == [3, 2, 1]
    found, _ = pages(client, headers, "/api/v1/experiments", "experiments")
    assert {"Default", "paged"} <= {e["name"] for e in found}
