"""Webhooks end to end: a real receiver verifying signatures with `standardwebhooks`, a
service process delivering from its scheduler, a receiver that goes away for a while,
and a service killed right after committing an event."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from registry_service.db.base import utcnow
from registry_service.db.database import Database
from registry_service.db.migrate import upgrade
from registry_service.integrations.webhooks import WebhookService
from registry_service.services.audit import AuditLog
from registry_service.services.context import Context
from registry_service.services.tokens import TokenService
from tests.integration.conftest import ROOT
from tests.rig import ServiceProcess, create_database, free_port


class Receiver:
    """An HTTP endpoint that keeps only deliveries whose signature verifies. It can go
    away (its port closed) and come back on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.secrets: list[str] = []
        self.received: list[dict] = []  # verified: webhook-id, body, headers
        self.forged = 0
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def up(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                for secret in receiver.secrets:
                    try:
                        Webhook(secret).verify(body, headers)
                    except WebhookVerificationError:
                        continue
                    with receiver.lock:
                        receiver.received.append(
                            {"id": headers["webhook-id"], "body": json.loads(body)}
                        )
                    self.send_response(204)
                    self.end_headers()
                    return
                with receiver.lock:
                    receiver.forged += 1
                self.send_response(401)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def down(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def bodies(self, event_type: str | None = None) -> list[dict]:
        with self.lock:
            return [
                r["body"]
                for r in self.received
                if event_type is None or r["body"].get("type") == event_type
            ]

    def wait_for(self, predicate, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = predicate(list(self.received))
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError(f"not received in {timeout} s; got {self.received}")


@pytest.fixture(scope="module")
def own_db(pg_server_url):
    # The scheduler runs here, so these tests keep a database of their own.
    url = create_database(pg_server_url, "webhooks")
    upgrade(url)
    return url


@pytest.fixture(scope="module")
def admin(own_db):
    database = Database(own_db)
    tokens = TokenService(database, AuditLog(database))
    suffix = uuid.uuid4().hex[:6]
    token, _ = tokens.create(Context("test-setup"), f"hooks-admin-{suffix}", ["admin"])
    for name in ("ann", "bob"):  # a Production quorum must be reachable
        tokens.create(Context("test-setup"), f"hooks-{name}-{suffix}", ["approver"])
    database.dispose()
    return {"Authorization": f"Bearer {token}", "Connection": "close"}


def service_env(own_db, mlflow_uri, tmp_path, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "MLFLOW_"))}
    env.update(
        REGISTRY_DATABASE_URL=own_db,
        MLFLOW_TRACKING_URI=mlflow_uri,
        REGISTRY_DATA_DIR=str(tmp_path / "data"),
        REGISTRY_WEBHOOK_RETRY_SECONDS="0.5",
        REGISTRY_PUBLIC_URL="https://registry.example.com",
        # The receivers listen on loopback, which webhooks call only when allowed.
        REGISTRY_WEBHOOK_ALLOW_NETWORKS="127.0.0.0/8",
        **extra,
    )
    return env


def add_webhook(url, admin, receiver, **body):
    answer = requests.post(
        f"{url}/api/v1/webhooks",
        headers=admin,
        json={"url": receiver.url, **body},
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    receiver.secrets.append(answer.json()["secret"])
    return answer.json()


def test_signed_deliveries_survive_a_receiver_outage_each_once(
    own_db, admin, mlflow_uri, make_run, tmp_path
):
    receiver = Receiver().up()
    service = ServiceProcess(
        service_env(own_db, mlflow_uri, tmp_path), tmp_path / "service.log", ROOT
    ).start()
    url = service.url
    model = f"hooks-{uuid.uuid4().hex[:8]}"
    try:
        hook = add_webhook(
            url,
            admin,
            receiver,
            events=["model.created", "model.updated", "version.*", "promotion.*"],
        )
        assert hook["secret"].startswith("whsec_") and hook["enabled"]
        listed = requests.get(f"{url}/api/v1/webhooks", headers=admin, timeout=30).json()
        assert "secret" not in json.dumps(listed)
        slack = add_webhook(url, admin, receiver, events=["promotion.requested"], format="slack")

        created = requests.post(
            f"{url}/api/v1/models", headers=admin, json={"name": model}, timeout=30
        )
        assert created.status_code == 201
        first = receiver.wait_for(
            lambda got: [r for r in got if r["body"].get("type") == "model.created"]
        )[0]["body"]
        assert first["data"]["model_name"] == model and first["data"]["actor"].startswith(
            "hooks-admin-"
        )

        # The receiver goes away; changes keep coming and are owed, not lost.
        receiver.down()
        for i in range(5):
            answer = requests.patch(
                f"{url}/api/v1/models/{model}",
                headers=admin,
                json={"description": f"revision {i}"},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
        time.sleep(3)
        owed = requests.get(
            f"{url}/api/v1/webhooks/{hook['id']}/deliveries",
            headers=admin,
            params={"status": "pending"},
            timeout=30,
        ).json()["deliveries"]
        assert len(owed) == 5
        assert all(d["attempts"] >= 1 and d["last_error"] for d in owed), owed
        assert all("ConnectionError" in d["attempt_log"][-1]["error"] for d in owed)

        receiver.up()
        receiver.wait_for(
            lambda got: len([r for r in got if r["body"]["type"] == "model.updated"]) >= 5
        )
        updates = receiver.bodies("model.updated")
        assert sorted(b["data"]["after"]["description"] for b in updates) == [
            f"revision {i}" for i in range(5)
        ]

        # A promotion request tells approvers what to review and where.
        run_id = make_run(metrics={"auc": 0.9})
        registered = requests.post(
            f"{url}/api/v1/models/{model}/versions",
            headers=admin,
            json={"run_id": run_id, "artifact_path": "model"},
            timeout=60,
        )
        assert registered.status_code == 201, registered.text
        opened = requests.post(
            f"{url}/api/v1/promotions",
            headers=admin,
            json={
                "model_name": model,
                "version": 1,
                "target_stage": "Production",
                "reason": "auc 0.9 on holdout",
            },
            timeout=60,
        )
        assert opened.status_code == 201, opened.text
        request_id = opened.json()["id"]
        receiver.wait_for(
            lambda got: (
                [r for r in got if r["body"].get("type") == "promotion.requested"]
                and [r for r in got if "text" in r["body"]]
            )
        )
        (requested,) = receiver.bodies("promotion.requested")
        assert requested["data"]["promotion"] == {
            "id": request_id,
            "kind": "promotion",
            "model_name": model,
            "version": 1,
            "target": "stage Production",
            "requester": first["data"]["actor"],
            "reason": "auc 0.9 on holdout",
            "required_approvals": 2,
            "status": "pending",
            "url": f"https://registry.example.com/api/v1/promotions/{request_id}",
            "review_url": "https://registry.example.com/review",
        }
        (message,) = [r["body"]["text"] for r in receiver.received if "text" in r["body"]]
        assert f"*{model}* version 1 to stage Production" in message
        assert "Needs 2 approval(s)" in message

        # Nothing stays owed, and each delivery arrived exactly once (a 2xx settles it).
        deadline = time.monotonic() + 30
        while True:
            deliveries = {
                webhook_id: requests.get(
                    f"{url}/api/v1/webhooks/{webhook_id}/deliveries", headers=admin, timeout=30
                ).json()["deliveries"]
                for webhook_id in (hook["id"], slack["id"])
            }
            statuses = {d["status"] for ds in deliveries.values() for d in ds}
            if statuses == {"delivered"} or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert statuses == {"delivered"}, deliveries
        ids = [r["id"] for r in receiver.received]
        assert len(ids) == len(set(ids))
        assert receiver.forged == 0
        delivered = deliveries[hook["id"]] + deliveries[slack["id"]]
        assert sorted(d["message_id"] for d in delivered) == sorted(ids)

        # A redelivery repeats the same webhook-id, so the receiver can tell.
        again = deliveries[hook["id"]][-1]
        answer = requests.post(
            f"{url}/api/v1/webhooks/{hook['id']}/deliveries/{again['id']}/redeliver",
            headers=admin,
            timeout=30,
        )
        assert answer.status_code == 202 and answer.json()["status"] == "pending"
        receiver.wait_for(lambda got: [r["id"] for r in got].count(again["message_id"]) == 2)
    finally:
        service.stop()
        receiver.down()


def test_an_event_committed_just_before_a_crash_is_still_delivered(
    own_db, admin, mlflow_uri, tmp_path
):
    receiver = Receiver().up()
    # No scheduler: nothing can be delivered before the process dies.
    quiet = ServiceProcess(
        service_env(own_db, mlflow_uri, tmp_path, REGISTRY_SCHEDULER="0"),
        tmp_path / "quiet.log",
        ROOT,
    ).start()
    model = f"crash-{uuid.uuid4().hex[:8]}"
    try:
        add_webhook(quiet.url, admin, receiver, events=["model.created"])
        answer = requests.post(
            f"{quiet.url}/api/v1/models", headers=admin, json={"name": model}, timeout=30
        )
        assert answer.status_code == 201
        os.killpg(quiet.process.pid, signal.SIGKILL)
        quiet.process.wait(30)
        quiet.process = None
        time.sleep(1)
        assert receiver.bodies("model.created") == []

        # Any process that runs the jobs next delivers what the dead one committed.
        after = ServiceProcess(
            service_env(own_db, mlflow_uri, tmp_path), tmp_path / "after.log", ROOT
        ).start()
        try:
            got = receiver.wait_for(
                lambda got: [r for r in got if r["body"]["data"]["model_name"] == model]
            )
            assert len(got) == 1 and got[0]["body"]["type"] == "model.created"
        finally:
            after.stop()
    finally:
        quiet.stop()
        receiver.down()


def test_a_day_of_failures_disables_the_webhook_audited(own_db):
    database = Database(own_db)
    audit = AuditLog(database)
    ctx = Context("test-setup")
    now = [None]

    service = WebhookService(
        database,
        audit,
        public_url="http://localhost:8080",
        retry_seconds=0.01,
        give_up_after=timedelta(hours=24),
        timeout=2,
        allow_networks=["127.0.0.0/8"],
        clock=lambda: now[0] or utcnow(),
    )
    try:
        for other in service.list():  # earlier tests' receivers are gone
            service.delete(ctx, other.id)
        closed = f"http://127.0.0.1:{free_port()}/gone"
        hook, _ = service.create(ctx, closed, ["probe.*"])
        audit.record(ctx, "probe.sent", subject="probe:1")
        result = service.deliver_due(ctx)
        assert result["failed_attempts"] == 1 and result["disabled"] == 0
        assert service.get(hook.id).enabled

        # A day later the delivery is given up on; nothing ever got through: disabled.
        now[0] = utcnow() + timedelta(hours=25)
        result = service.deliver_due(ctx)
        assert result == {"delivered": 0, "failed_attempts": 1, "given_up": 1, "disabled": 1}
        disabled = service.get(hook.id)
        assert not disabled.enabled and "no delivery succeeded" in disabled.disabled_reason
        (delivery,) = service.deliveries(hook.id, None, 10, None).items
        assert delivery.status == "failed" and delivery.attempts == 2
        events = audit.trail(f"webhook:{hook.id}")
        assert [e.action for e in events] == ["webhook.created", "webhook.disabled"]
        assert all("secret" not in json.dumps(e.after) for e in events)
        # The audit log shows neither the URL's path nor the receiver's words.
        assert "/gone" not in json.dumps([e.before for e in events] + [e.after for e in events])
        assert events[1].after["reason"].endswith("; last: ConnectionError")

        # A disabled webhook is still owed what happens, but nothing is sent to it.
        audit.record(ctx, "probe.sent", subject="probe:2")
        assert service.get(hook.id).pending_deliveries == 1
        assert service.deliver_due(ctx)["failed_attempts"] == 0
        # Re-enabled, what waited gets a fresh day of retries rather than one last try.
        resumed = service.update(ctx, hook.id, {"enabled": True})
        assert resumed.enabled and resumed.disabled_reason is None
        result = service.deliver_due(ctx)
        assert result["failed_attempts"] == 1 and result["given_up"] == 0
        assert service.get(hook.id).enabled
    finally:
        database.dispose()
