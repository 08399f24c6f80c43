"""A whole promotion on the embedded default: SQLite tables, in-process MLflow, file locks."""

from __future__ import annotations

import uuid

from registry_service.config import Settings
from registry_service.domain.policy import Target
from registry_service.domain.promotion import Status
from registry_service.services.container import build_services
from registry_service.services.context import Context

CTX = Context(actor="tester")


def test_promotion_executes_on_the_embedded_default(sqlite_url, embedded_gateway, tmp_path):
    services = build_services(
        Settings.from_env().with_overrides(database_url=sqlite_url), embedded_gateway
    )
    try:
        people = {}
        for name, roles in (("rita", ["requester"]), ("ann", ["approver"]), ("bob", ["approver"])):
            secret, _ = services.tokens.create(CTX, name, roles)
            people[name] = services.tokens.authenticate(secret)
        model = f"emb-{uuid.uuid4().hex[:8]}"
        embedded_gateway.create_registered_model(model, None, {})
        embedded_gateway.create_model_version(model, str(tmp_path), None, None, {})

        opened = services.promotions.create(
            CTX, people["rita"], model, 1, Target.stage("Production"), "first release"
        )
        services.promotions.approve(CTX, people["ann"], opened.id, None)
        done = services.promotions.approve(CTX, people["bob"], opened.id, None)

        assert done.status is Status.EXECUTED
        assert embedded_gateway.get_model_version(model, 1).stage == "Production"
        # The execution lock is a file next to the database, shared by every process.
        assert any((tmp_path / "locks").glob("*.lock"))
        assert services.audit.verify().ok
    finally:
        services.close()
