"""Reconciliation with MLflow: on demand (admin), and on MLflow's own webhooks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from flask import request
from flask.views import MethodView

from registry_service.api import Blueprint
from registry_service.auth import current_context
from registry_service.domain.entities import Role
from registry_service.domain.names import check_model_name
from registry_service.errors import AuthenticationError, BadRequest, PermissionDenied
from registry_service.integrations.resources.reconcile.schemas import (
    MlflowWebhookAnswerSchema,
    ReconcileArgsSchema,
    ReconcileResultSchema,
)
from registry_service.services.container import get_services
from registry_service.services.context import Context

blp = Blueprint(
    "integrations",
    __name__,
    url_prefix="/integrations",
    description="Changes made in MLflow behind the registry: found, recorded, reverted",
)
# MLflow cannot send a bearer token: its webhooks are authenticated by their signature.
hook_blp = Blueprint(
    "mlflow-webhook",
    __name__,
    url_prefix="/integrations",
    public=True,
    description="MLflow's own webhooks, verified by their HMAC signature",
)
# A signed delivery older than this is a replay.
TOLERANCE_SECONDS = 300
MLFLOW_ACTOR = "mlflow-webhook"


@blp.route("/reconcile")
class Reconcile(MethodView):
    @blp.requires(Role.ADMIN)
    @blp.arguments(ReconcileArgsSchema, location="query")
    @blp.response(200, ReconcileResultSchema)
    @blp.problems(not_found="No such model")
    def post(self, args):
        """Compare MLflow's stages and aliases with the registry's records now"""
        reconciler = get_services().reconciler
        ctx = current_context()
        if args["model_name"] is not None:
            name = check_model_name(args["model_name"], "model_name", "query")
            found = reconciler.reconcile(ctx, name, noticed_by="request")
            return {"models": [found], "counts": {found.outcome: 1}}
        return {"models": [], "counts": reconciler.reconcile_all(ctx)}


def _verify(secret: str, body: str) -> None:
    signature = request.headers.get("X-MLflow-Signature", "")
    delivery = request.headers.get("X-MLflow-Delivery-Id", "")
    stamp = request.headers.get("X-MLflow-Timestamp", "")
    if not (signature and delivery and stamp.isdigit()):
        raise AuthenticationError(
            "an MLflow webhook needs X-MLflow-Signature, -Delivery-Id and -Timestamp"
        )
    if abs(time.time() - int(stamp)) > TOLERANCE_SECONDS:
        raise AuthenticationError("the MLflow webhook's timestamp is too old or too new")
    digest = hmac.new(
        secret.encode(), f"{delivery}.{stamp}.{body}".encode(), hashlib.sha256
    ).digest()
    expected = "v1," + base64.b64encode(digest).decode()
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise AuthenticationError("the MLflow webhook's signature does not verify")


@hook_blp.route("/mlflow-webhook")
class MlflowWebhook(MethodView):
    @hook_blp.doc(security=[])
    @hook_blp.response(200, MlflowWebhookAnswerSchema)
    @hook_blp.problems(not_found="No such model")
    def post(self):
        """Receive an MLflow webhook (alias set or deleted, version created) and compare
        that model at once"""
        services = get_services()
        secret = services.settings.mlflow_webhook_secret
        if not secret:
            raise PermissionDenied(
                "MLflow webhooks are not accepted: REGISTRY_MLFLOW_WEBHOOK_SECRET is not set"
            )
        body = request.get_data(as_text=True)
        _verify(secret, body)
        try:
            event = json.loads(body)
            name = event["data"]["name"]
            received = f"{event['entity']}.{event['action']}"
        except (ValueError, KeyError, TypeError) as exc:
            raise BadRequest("not an MLflow webhook payload (entity, action, data.name)") from exc
        if not isinstance(name, str):
            raise BadRequest("data.name must be a model name")
        check_model_name(name, "data.name", "json")
        ctx = Context(MLFLOW_ACTOR, request.headers.get("X-MLflow-Delivery-Id"))
        found = services.reconciler.reconcile(ctx, name, noticed_by=f"mlflow-webhook {received}")
        return {"received": received, "reconciliation": found}
