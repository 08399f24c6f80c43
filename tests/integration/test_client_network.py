"""The REST client and CLI against a real gunicorn, over a network that misbehaves:
idle gaps on kept-alive connections, connections dropped mid-call, restarts mid-wait."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import urllib3

from registry_service.sdk.client import RegistryClient, Unreachable
from registry_service.services.context import Context
from tests.conftest import get_services_of
from tests.rig import FaultyProxy

CLI = str(Path(sys.executable).parent / "registry-service")
CTX = Context(actor="test-setup")


@pytest.fixture(scope="module")
def server(live_server):
    return live_server


@pytest.fixture
def model(app, model_name, make_run):
    services = get_services_of(app)
    services.models.create_model(CTX, model_name, None, {})
    for _ in range(2):
        services.models.register_version(CTX, model_name, make_run(), "model", None, {})
    return model_name


def test_idle_gaps_reuse_one_kept_alive_connection(server, identities, monkeypatch):
    connects = []
    connect = urllib3.connection.HTTPConnection.connect

    def counting_connect(self):
        connects.append(self.port)
        return connect(self)

    monkeypatch.setattr(urllib3.connection.HTTPConnection, "connect", counting_connect)
    client = RegistryClient(server.url, identities["viewer"]["token"], retries=0)
    for _ in range(2):
        assert client.call("GET", "/auth/whoami")["name"] == identities["viewer"]["name"]
        # Idle past gunicorn's default keep-alive (2 s, enforced within about 4 s).
        time.sleep(5)
    assert client.call("GET", "/auth/whoami")["roles"] == ["viewer"]
    assert connects == [server.port]  # never reconnected: the server kept it alive


def test_safe_calls_are_retried_when_the_connection_drops(server, identities):
    proxy = FaultyProxy(server.port)
    proxy.drop(2, "GET /api/v1/auth/whoami")
    try:
        client = RegistryClient(proxy.url, identities["viewer"]["token"])
        assert client.call("GET", "/auth/whoami")["name"] == identities["viewer"]["name"]
        assert proxy.dropped == 2
    finally:
        proxy.close()


def test_keyed_post_is_retried_and_acts_once(server, identities, model, client, auth):
    # The service opens the request, then the answer is lost: the retry gets the
    # stored answer for the key instead of opening a second request.
    proxy = FaultyProxy(server.port)
    proxy.drop(1, "POST /api/v1/promotions")
    try:
        api = RegistryClient(proxy.url, identities["requester"]["token"])
        opened = api.request_promotion(
            model, 1, "nightly", stage="Staging", idempotency_key=f"ci-{uuid.uuid4()}"
        )
        assert proxy.dropped == 1
    finally:
        proxy.close()
    listed = client.get("/api/v1/promotions", headers=auth(), query_string={"model": model}).json[
        "promotions"
    ]
    assert [p["id"] for p in listed] == [opened["id"]]


def test_unkeyed_post_is_never_sent_twice(server, identities, model, client, auth):
    proxy = FaultyProxy(server.port)
    proxy.drop(1, "POST /api/v1/promotions")
    try:
        api = RegistryClient(proxy.url, identities["requester"]["token"])
        with pytest.raises(Unreachable):
            api.call(
                "POST",
                "/promotions",
                json={
                    "model_name": model,
                    "version": 2,
                    "target_stage": "Staging",
                    "reason": "no key",
                },
            )
    finally:
        proxy.close()
    listed = client.get("/api/v1/promotions", headers=auth(), query_string={"model": model}).json[
        "promotions"
    ]
    assert len(listed) == 1  # acted once; the client reports it could not tell


def _cli(server, identities, *args: str, role: str = "requester") -> subprocess.Popen:
    env = {
        **os.environ,
        "REGISTRY_URL": server.url,
        "REGISTRY_TOKEN": identities[role]["token"],
    }
    return subprocess.Popen(
        [CLI, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _pending(client, auth, model, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = client.get(
            "/api/v1/promotions", headers=auth(), query_string={"model": model}
        ).json["promotions"]
        if listed:
            return listed[0]
        time.sleep(0.2)
    raise AssertionError("the CLI opened no request")


def test_wait_survives_a_restart_of_the_service(server, identities, model, client, auth):
    waiting = _cli(
        server, identities, "promote", "request", model, "1", "--stage", "Staging",
        "--reason", "nightly", "--wait", "--timeout", "120", "--json",
    )  # fmt: skip
    try:
        request = _pending(client, auth, model)
        server.restart()
        done = client.post(
            f"/api/v1/promotions/{request['id']}/approve", headers=auth("approver"), json={}
        )
        assert done.json["status"] == "executed"
        out, err = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == 0, err
    assert json.loads(out)["status"] == "executed"


def test_wait_exits_3_when_the_service_stays_down(server, identities, model, client, auth):
    waiting = _cli(
        server, identities, "promote", "request", model, "2", "--stage", "Staging",
        "--reason", "nightly", "--wait", "--timeout", "8",
    )  # fmt: skip
    try:
        request = _pending(client, auth, model)
        server.stop()
        started = time.monotonic()
        _, err = waiting.communicate(timeout=60)
        waited = time.monotonic() - started
    finally:
        if waiting.poll() is None:
            waiting.kill()
        server.start()
    assert waiting.returncode == 3, err
    assert f"request {request['id']} was pending when last seen" in err
    assert waited < 30  # gave up at its timeout, not after retrying forever
