"""The REST client and CLI against a real gunicorn, over a network that misbehaves:
idle gaps on kept-alive connections, connections dropped mid-call, restarts mid-wait."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import urllib3

from registry_service.sdk.client import RegistryClient, Unreachable
from registry_service.services.context import Context
from tests.conftest import get_services_of

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


def _read_message(sock: socket.socket) -> bytes:
    """One HTTP/1.1 message with a Content-Length body (all ours have one)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


class DroppingProxy:
    """Forwards to the service, but for the first ``drops`` connections reads the request
    and closes without an answer: before forwarding it, or after the service answered
    (so the service acted, and the client never heard)."""

    def __init__(self, upstream_port: int, drops: int, forward_first: bool) -> None:
        self.upstream_port = upstream_port
        self.drops = drops
        self.forward_first = forward_first
        self.dropped = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        with client, upstream:
            while True:
                request = _read_message(client)
                if not request:
                    return
                upstream.sendall(request)
                if self.dropped < self.drops:
                    self.dropped += 1
                    if self.forward_first:
                        _read_message(upstream)
                    return  # the client gets a closed connection and no answer
                client.sendall(_read_message(upstream))

    def close(self) -> None:
        self.listener.close()


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
    proxy = DroppingProxy(server.port, drops=2, forward_first=False)
    try:
        client = RegistryClient(f"http://127.0.0.1:{proxy.port}", identities["viewer"]["token"])
        assert client.call("GET", "/auth/whoami")["name"] == identities["viewer"]["name"]
        assert proxy.dropped == 2
    finally:
        proxy.close()


def test_keyed_post_is_retried_and_acts_once(server, identities, model, client, auth):
    # The service opens the request, then the answer is lost: the retry gets the
    # stored answer for the key instead of opening a second request.
    proxy = DroppingProxy(server.port, drops=1, forward_first=True)
    try:
        api = RegistryClient(f"http://127.0.0.1:{proxy.port}", identities["requester"]["token"])
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
    proxy = DroppingProxy(server.port, drops=1, forward_first=True)
    try:
        api = RegistryClient(f"http://127.0.0.1:{proxy.port}", identities["requester"]["token"])
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
