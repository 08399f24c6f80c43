"""Probes and the spec: open without a token."""


def test_health_is_open(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_ready_reports_each_dependency(client):
    response = client.get("/ready")
    assert response.status_code == 200
    body = response.json
    assert body["status"] == "ok"
    assert body["dependencies"]["database"]["status"] == "ok"
    assert body["dependencies"]["mlflow"]["status"] == "ok"


def test_request_id_is_minted_and_the_clients_echoed_beside_it(client):
    echoed = client.get("/health", headers={"X-Request-ID": "ci-job-42"})
    assert echoed.headers["X-Request-ID"] != "ci-job-42"
    assert len(echoed.headers["X-Request-ID"]) == 32
    assert echoed.headers["X-Client-Request-ID"] == "ci-job-42"
    generated = client.get("/health", headers={"X-Request-ID": "bad id with spaces"})
    assert len(generated.headers["X-Request-ID"]) == 32
    assert "X-Client-Request-ID" not in generated.headers
