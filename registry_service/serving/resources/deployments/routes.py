"""A model's deployment: which governed targets serve it, in what split."""

from __future__ import annotations

from flask import request
from flask.views import MethodView

from registry_service.api import Blueprint
from registry_service.auth import current_context
from registry_service.domain.entities import Role
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
    @blp.response(200, DeploymentSchema)
    @blp.problems(
        not_found="No such model",
        precondition_failed="If-Match does not match the current ETag",
        precondition_required="The model has a deployment and If-Match is missing",
    )
    def put(self, body, name):
        """Set what a model serves (approver or admin; send If-Match when one exists)"""
        spec = _serving().put_deployment(
            current_context(), name, body, request.headers.get("If-Match")
        )
        return _body(name, spec)

    @blp.requires(Role.APPROVER)
    @blp.response(200, DeploymentSchema)
    @blp.problems(
        not_found="No such model, or it has no deployment of its own",
        precondition_failed="If-Match does not match the current ETag",
        precondition_required="If-Match is missing",
    )
    def delete(self, name):
        """Remove a model's deployment: back to all traffic to Production (approver)"""
        spec = _serving().delete_deployment(
            current_context(), name, request.headers.get("If-Match")
        )
        return _body(name, spec)


@blp.route("/<string:name>/deployment/reload")
class DeploymentReload(MethodView):
    @blp.requires(Role.ADMIN)
    @blp.response(200, DeploymentSchema)
    @blp.problems(not_found="No such model")
    def post(self, name):
        """Make every serving process re-resolve and reload this model now (admin)"""
        return _body(name, _serving().reload(current_context(), name))
