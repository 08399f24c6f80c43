"""Hot reload under load: gunicorn with two workers serves a promotion, executed through
the approval workflow, within 2 s on every worker and without one failed request."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from registry_service.services.context import Context
from tests.conftest import get_services_of
from tests.serving_models import log_sklearn

CTX = Context(actor="test-setup")
ROWS = [{"a": 0.35, "b": 0.5}]
SWAP_SECONDS = 2.0


@pytest.fixture
def model(app, model_name, mlflow_client):
    services = get_services_of(app)
    services.models.create_model(CTX, model_name, None, {})
    for threshold in (0.5, 0.2):
        run_id, _ = log_sklearn(mlflow_client, threshold)
        services.models.register_version(CTX, model_name, run_id, "model", None, {})
    return model_name


def call(session, url, token, method="GET", **kwargs):
    return session.request(
        method, url, headers={"Authorization": f"Bearer {token}"}, timeout=30, **kwargs
    )


def promote(url, identities, model, version) -> float:
    """Request and approve; returns when the executing approval answered."""
    with requests.Session() as s:
        created = call(
            s,
            f"{url}/api/v1/promotions",
            identities["requester"]["token"],
            "POST",
            json={
                "model_name": model,
                "version": version,
                "target_stage": "Production",
                "reason": "retrained",
            },
        )
        assert created.status_code == 201, created.text
        for who in ("approver", "approver2"):
            done = call(
                s,
                f"{url}/api/v1/promotions/{created.json()['id']}/approve",
                identities[who]["token"],
                "POST",
                json={},
            )
        assert done.json()["status"] == "executed", done.text
    return time.monotonic()


def routes_by_process(url, token, model, tries=30) -> dict[int, int | None]:
    """What each worker routes Production to, asked on fresh connections."""
    seen: dict[int, int | None] = {}
    for _ in range(tries):
        status = requests.get(
            f"{url}/api/v1/serving/models",
            headers={"Authorization": f"Bearer {token}", "Connection": "close"},
            timeout=30,
        ).json()
        mine = [r for r in status["routes"] if r["model_name"] == model]
        seen[status["process"]] = mine[0]["variants"][0]["version"] if mine else None
    return seen


def test_promotion_is_served_by_every_worker_within_two_seconds_without_errors(
    live_server, identities, model
):
    url, token = live_server.url, identities["predictor_only"]["token"]
    promote(url, identities, model, 1)
    # Every worker answers once first: the cold start is not what this measures.
    deadline = time.monotonic() + 60
    warm_ups = 0
    while (seen := routes_by_process(url, identities["viewer"]["token"], model)) and (
        len(seen) < 2 or set(seen.values()) != {1}
    ):
        warm_ups += (
            requests.post(
                f"{url}/api/v1/models/{model}/predict",
                headers={"Authorization": f"Bearer {token}", "Connection": "close"},
                json={"dataframe_records": ROWS},
                timeout=30,
            ).status_code
            == 200
        )
        assert time.monotonic() < deadline, "workers never served version 1"
    results: list[tuple[float, float, int, int | None]] = []
    stop = threading.Event()

    def load():
        with requests.Session() as session:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    answer = call(
                        session,
                        f"{url}/api/v1/models/{model}/predict",
                        token,
                        "POST",
                        json={"dataframe_records": ROWS},
                    )
                    version = answer.json().get("model_version")
                    results.append((started, time.monotonic(), answer.status_code, version))
                except requests.RequestException:
                    results.append((started, time.monotonic(), 0, None))
                # Steady load below saturation: with both cores saturated (and MLflow's
                # server on the same two cores) the new version's download and load
                # compete with every request thread and take 3-4 s.
                stop.wait(0.1)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(3)
    executed = promote(url, identities, model, 2)
    time.sleep(SWAP_SECONDS)
    workers = routes_by_process(url, identities["viewer"]["token"], model)
    time.sleep(2)
    stop.set()
    for t in threads:
        t.join()

    failures = [r for r in results if r[2] != 200]
    assert failures == [], failures[:5]
    before = [r for r in results if r[1] < executed]
    late = [r for r in results if r[0] > executed + SWAP_SECONDS]
    timeline = [(round(r[0] - executed, 2), round(r[1] - executed, 2), r[3]) for r in results]
    assert before and {r[3] for r in before} == {1}, (len(results), timeline[:10])
    stale = [(round(r[0] - executed, 2), round(r[1] - executed, 2)) for r in late if r[3] != 2]
    assert late and not stale, (len(late), len(stale), stale[-5:], workers)
    assert len(workers) == 2 and set(workers.values()) == {2}, workers
    # Both workers fold their batches into the same per-minute rollups: none is lost.
    by_version = {}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        report = requests.get(
            f"{url}/api/v1/models/{model}/monitoring?since=10m",
            headers={"Authorization": f"Bearer {identities['viewer']['token']}"},
            timeout=30,
        ).json()
        by_version = {g["version"]: g["requests"] for g in report["groups"]}
        if sum(by_version.values()) >= len(results) + warm_ups:
            break
        time.sleep(0.5)
    served = {v: sum(1 for r in results if r[3] == v) for v in (1, 2)}
    served[1] += warm_ups
    assert by_version == served, (by_version, served)
    first_new = min(r[1] for r in results if r[3] == 2)
    print(
        f"swap: {len(results)} requests, 0 failed, v2 answering {first_new - executed:.2f}s "
        "after the approval returned"
    )


def test_metrics_add_up_every_worker(live_server, identities, model):
    from prometheus_client.parser import text_string_to_metric_families

    url, token = live_server.url, identities["predictor_only"]["token"]
    promote(url, identities, model, 1)
    for _ in range(12):  # fresh connections: both workers answer some
        answer = requests.post(
            f"{url}/api/v1/models/{model}/predict",
            headers={"Authorization": f"Bearer {token}", "Connection": "close"},
            json={"dataframe_records": ROWS},
            timeout=30,
        )
        assert answer.status_code == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(
            requests.get(f"{url}/metrics", timeout=30).text
        )
        for s in family.samples
    }
    labels = (("model", model), ("status", "ok"), ("variant", "default"), ("version", "1"))
    assert samples[("registry_prediction_duration_seconds_count", labels)] == 12
    live = samples[("registry_serving_version", (("model", model), ("target", "Production")))]
    assert live == 1
