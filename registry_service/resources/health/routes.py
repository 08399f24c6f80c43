"""Liveness and readiness, open to probes without a token."""

from __future__ import annotations

import time

import marshmallow as ma
from flask.views import MethodView

from registry_service.api import Blueprint, Schema
from registry_service.db.migrate import current_revisions, head_revisions
from registry_service.errors import RegistryError, ServiceUnavailable
from registry_service.services.container import get_services

blp = Blueprint("health", __name__, public=True, description="Probes")


class HealthSchema(Schema):
    status = ma.fields.String()


class DependencySchema(Schema):
    status = ma.fields.String(metadata={"enum": ["ok", "unavailable", "outdated"]})
    latency_ms = ma.fields.Float()
    detail = ma.fields.String(allow_none=True)


class ReadySchema(Schema):
    status = ma.fields.String(metadata={"enum": ["ok", "unavailable"]})
    dependencies = ma.fields.Dict(
        keys=ma.fields.String(), values=ma.fields.Nested(DependencySchema)
    )


def _probe(check) -> dict:
    started = time.perf_counter()
    try:
        detail = check()
        status = "ok" if detail is None else "outdated"
    except RegistryError as exc:
        status, detail = "unavailable", exc.detail
    except Exception as exc:  # a probe reports any failure instead of raising it
        status, detail = "unavailable", type(exc).__name__
    return {
        "status": status,
        "latency_ms": round((time.perf_counter() - started) * 1000, 2),
        "detail": detail,
    }


@blp.route("/health")
class Health(MethodView):
    @blp.doc(security=[])
    @blp.response(200, HealthSchema)
    def get(self):
        """Process is alive"""
        return {"status": "ok"}


@blp.route("/ready")
class Ready(MethodView):
    @blp.doc(security=[])
    @blp.response(200, ReadySchema)
    @blp.alt_response(503, schema=ReadySchema, description="A dependency is not ready")
    def get(self):
        """Database and MLflow reachable, schema migrated"""
        services = get_services()

        def database():
            services.db.ping()
            current, heads = set(current_revisions(services.db.engine)), set(head_revisions())
            if current != heads:
                return f"schema at {sorted(current)}, code expects {sorted(heads)}: run db upgrade"
            return None

        def serving():
            if services.serving.preloaded is False:
                raise ServiceUnavailable("loading preloaded deployments")

        deps = {"database": _probe(database), "mlflow": _probe(services.gateway.ping)}
        if services.serving.preloaded is not None:
            deps["serving"] = _probe(serving)
        ready = all(d["status"] == "ok" for d in deps.values())
        return {"status": "ok" if ready else "unavailable", "dependencies": deps}, (
            200 if ready else 503
        )
