"""Application factory."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from flask import Flask, g, request

from registry_service.api import BEARER, Api, IdConverter, handle_registry_error
from registry_service.config import Settings
from registry_service.domain.names import INT32_MAX
from registry_service.errors import RegistryError
from registry_service.gateway.base import RegistryGateway
from registry_service.metrics import StateCollector
from registry_service.services.container import EXTENSION_KEY, build_services
from registry_service.web import register_pages

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def create_app(
    config: Settings | dict[str, Any] | None = None, gateway: RegistryGateway | None = None
) -> Flask:
    """Build the app; ``config`` is Settings, or overrides of Settings fields."""
    if isinstance(config, Settings):
        settings = config
    else:
        settings = Settings.from_env().with_overrides(**(config or {}))

    app = Flask(__name__, static_folder=None)  # pages serve their own assets (web/)
    app.config.update(
        API_TITLE="registry-service",
        API_VERSION="v1",
        OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX="/api",
        OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={
            "info": {
                "description": "Governed model registry in front of MLflow. Press "
                "**Authorize** and paste a bearer token from `registry-service tokens "
                "create`. Approvers: `GET /api/v1/promotions?actionable=true` lists the "
                "requests you can approve; the [review page](/review) shows each one "
                "next to the champion it would replace.",
            },
            "security": [{BEARER: []}],
        },
        TESTING=settings.testing,
        # Larger bodies are refused with 413 before they are read into memory.
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        JSON_SORT_KEYS=False,
    )
    app.json.sort_keys = False

    register_services(app, settings, gateway)
    register_request_hooks(app)
    api = register_api(app)
    register_blueprints(api, serving_only=settings.serving_only)
    register_error_handlers(app)
    if not settings.serving_only:
        register_pages(app)
    register_metrics(app)
    return app


def register_metrics(app: Flask) -> None:
    """``GET /metrics`` in Prometheus' text format, open to scrapers like the probes."""

    services = app.extensions[EXTENSION_KEY]
    state = StateCollector(services.monitoring.gauges, services.db.ping, services.gateway.ping)

    def metrics():
        body, headers = services.metrics.render(state)
        return body, 200, headers

    app.add_url_rule("/metrics", "metrics", metrics, methods=["GET"])


def register_services(app: Flask, settings: Settings, gateway: RegistryGateway | None) -> None:
    app.extensions[EXTENSION_KEY] = build_services(settings, gateway)


def register_request_hooks(app: Flask) -> None:
    @app.before_request
    def assign_request_id() -> None:
        # Always ours: a request id names a prediction that feedback may judge, so a
        # client never chooses it. The client's own id is kept beside it for correlation.
        g.request_id = uuid.uuid4().hex
        incoming = request.headers.get("X-Request-ID", "")
        g.client_request_id = incoming if REQUEST_ID_RE.match(incoming) else None

    @app.before_request
    def start_clock() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def echo_request_id(response):
        if "request_id" in g:
            response.headers["X-Request-ID"] = g.request_id
        if g.get("client_request_id"):
            response.headers["X-Client-Request-ID"] = g.client_request_id
        if "started" in g:
            # The route template, not the path: one series per endpoint, not per model.
            route = request.url_rule.rule if request.url_rule is not None else "unmatched"
            metrics = app.extensions[EXTENSION_KEY].metrics
            metrics.http_requests.labels(request.method, route, str(response.status_code)).observe(
                time.perf_counter() - g.started
            )
        return response


def register_api(app: Flask) -> Api:
    app.url_map.converters["id"] = IdConverter
    api = Api(app)
    api.register_converter(
        IdConverter, lambda _: {"type": "integer", "minimum": 1, "maximum": INT32_MAX}
    )
    api.spec.components.security_scheme(
        BEARER,
        {
            "type": "http",
            "scheme": "bearer",
            "description": "Token from `registry-service tokens create`",
        },
    )
    return api


def register_blueprints(api: Api, serving_only: bool = False) -> None:
    from registry_service.integrations.resources.reconcile.routes import blp as integrations_blp
    from registry_service.integrations.resources.reconcile.routes import hook_blp as mlflow_hook_blp
    from registry_service.integrations.resources.webhooks.routes import blp as webhooks_blp
    from registry_service.monitoring.resources.abtests.routes import blp as abtests_blp
    from registry_service.monitoring.resources.alerts.routes import blp as alerts_blp
    from registry_service.monitoring.resources.drift.routes import blp as drift_blp
    from registry_service.monitoring.resources.figures.routes import blp as monitoring_blp
    from registry_service.resources.audit.routes import blp as audit_blp
    from registry_service.resources.auth.routes import blp as auth_blp
    from registry_service.resources.experiments.routes import blp as experiments_blp
    from registry_service.resources.health.routes import blp as health_blp
    from registry_service.resources.integrity.routes import blp as integrity_blp
    from registry_service.resources.lifecycle.routes import blp as lifecycle_blp
    from registry_service.resources.models.routes import blp as models_blp
    from registry_service.resources.policies.routes import blp as policies_blp
    from registry_service.resources.promotions.routes import blp as promotions_blp
    from registry_service.resources.runs.routes import blp as runs_blp
    from registry_service.scheduler.resources.jobs.routes import blp as jobs_blp
    from registry_service.serving.resources.deployments.routes import blp as deployments_blp
    from registry_service.serving.resources.inference.routes import blp as inference_blp
    from registry_service.serving.resources.inference.routes import (
        health_blp as inference_health_blp,
    )
    from registry_service.serving.resources.predictions.routes import blp as predictions_blp
    from registry_service.serving.resources.status.routes import blp as status_blp

    governance = (promotions_blp, models_blp, integrity_blp, lifecycle_blp, policies_blp)
    serving = (predictions_blp, deployments_blp, status_blp)
    monitoring = (monitoring_blp, abtests_blp, drift_blp, alerts_blp)
    records = (audit_blp, experiments_blp, runs_blp, auth_blp, jobs_blp)
    integrations = (webhooks_blp, integrations_blp, mlflow_hook_blp)
    # Registration order is the order of Swagger UI's sections: an approver's first.
    # Serving-only processes (scaled out for inference) carry the serving layer alone.
    versioned = (
        serving if serving_only else governance + serving + monitoring + records + integrations
    )
    for blp in versioned:
        api.register_blueprint(blp, url_prefix="/api/v1" + (blp.url_prefix or ""))
    for blp in (inference_blp, inference_health_blp, health_blp):
        api.register_blueprint(blp)


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(RegistryError, handle_registry_error)
