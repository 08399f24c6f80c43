"""A model's deployment: which governed targets serve it, in what split. A change that
moves traffic is a change request in the promotion workflow (202)."""

from __future__ import annotations

from flask import g, request
from flask.views import MethodView

from registry_service.api import Blueprint
from registry_service.auth import current_context
from registry_service.domain.entities import Role
from registry_service.domain.promotion import Promotion
from registry_service.resources import idempotent
from registry_service.resources.promotions.schemas import PromotionDetailSchema
from registry_service.services.container import get_services
from registry_service.serving.resources.deployments.schemas import (
    DeploymentInSchema,
    DeploymentSchema,
)
from registry_service.serving.service import etag_of

blp = Blueprint(
    "deployments",
    __name__,
    url_prefix="/models",
    description="What each model serves: variants on governed targets, split and "
    "sticky assignment, fallback",
)


def _serving():
    return get_services().serving


def _body(name: str, spec) -> tuple[dict, int, dict]:
    serving = _serving()
    body = spec.to_json() | {
        "model_name": name,
        "revision": spec.revision,
        "is_default": not spec.stored,
    }
    route = serving.describe(name, spec)
    for variant in body["variants"]:
        variant["version"] = route.get(variant["name"])
    return body, 200, {"ETag": etag_of(spec)}


def _outcome(name: str, result) -> tuple[dict, int]:
    """A change request answers 202; a change written at once, 200 with the spec."""
    if isinstance(result, Promotion):
        return PromotionDetailSchema().dump(result), 202
    body, status, _ = _body(name, result)
    return DeploymentSchema().dump(body), status


def _headers(body: dict, status: int) -> dict[str, str]:
    if status == 202:
        return {"Location": f"/api/v1/promotions/{body['id']}"}
    return {"ETag": f'"{body["revision"]}"'}


CHANGE_REQUEST = {
    "description": "The change moves traffic: a change request in the promotion workflow, "
    "pending until its rule's quorum approves it (POST /promotions/{id}/approve)",
    "headers": {"Location": {"schema": {"type": "string"}}},
    "success": True,
}
CHANGE_CONFLICT = (
    "A traffic change request against this revision is open (existing_request_id), or "
    "too few principals may approve it, or a call with this Idempotency-Key is in flight"
)


@blp.route("/<string:name>/deployment")
class Deployment(MethodView):
    @blp.requires()
    @blp.response(200, DeploymentSchema, headers={"ETag": {"schema": {"type": "string"}}})
    @blp.problems(not_found="No such model")
    def get(self, name):
        """Show what a model serves (its ETag guards changes)"""
        return _body(name, _serving().get_deployment(name))

    @blp.requires(Role.APPROVER)
    @blp.arguments(DeploymentInSchema)
    @blp.response(200, DeploymentSchema, headers={"ETag": {"schema": {"type": "string"}}})
    @blp.alt_response(202, schema=PromotionDetailSchema, **CHANGE_REQUEST)
    @blp.problems(
        not_found="No such model",
        conflict=CHANGE_CONFLICT,
        precondition_failed="If-Match does not match the current ETag",
        precondition_required="The model has a deployment and If-Match is missing",
    )
    @blp.doc(parameters=[idempotent.PARAMETER])
    def put(self, body, name):
        """Request a change of what a model serves (approver; If-Match once one exists)"""
        return idempotent.once(
            lambda: _outcome(
                name,
                _serving().put_deployment(
                    current_context(), g.principal, name, body, request.headers.get("If-Match")
                ),
            ),
            _headers,
        )

    @blp.requires(Role.APPROVER)
    @blp.response(200, DeploymentSchema, headers={"ETag": {"schema": {"type": "string"}}})
    @blp.alt_response(202, schema=PromotionDetailSchema, **CHANGE_REQUEST)
    @blp.problems(
        not_found="No such model, or it has no deployment of its own",
        conflict=CHANGE_CONFLICT,
        precondition_failed="If-Match does not match the current ETag",
        precondition_required="If-Match is missing",
    )
    @blp.doc(parameters=[idempotent.PARAMETER])
    def delete(self, name):
        """Request the removal of a deployment: all traffic back to Production (approver)"""
        return idempotent.once(
            lambda: _outcome(
                name,
                _serving().delete_deployment(
                    current_context(), g.principal, name, request.headers.get("If-Match")
                ),
            ),
            _headers,
        )


@blp.route("/<string:name>/deployment/reload")
class DeploymentReload(MethodView):
    @blp.requires(Role.ADMIN)
    @blp.response(200, DeploymentSchema)
    @blp.problems(not_found="No such model")
    def post(self, name):
        """Make every serving process re-resolve and reload this model now (admin)"""
        return _body(name, _serving().reload(current_context(), name))
