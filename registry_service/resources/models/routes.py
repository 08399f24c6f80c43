"""Registered models and their versions."""

from __future__ import annotations

from flask.views import MethodView

from registry_service.api import Blueprint
from registry_service.auth import current_context
from registry_service.domain.entities import Role, Stage
from registry_service.resources.models.schemas import (
    CompareArgsSchema,
    ComparisonSchema,
    ModelCreateSchema,
    ModelListArgsSchema,
    ModelPageSchema,
    ModelPatchSchema,
    ModelSchema,
    VersionArgsSchema,
    VersionCreateSchema,
    VersionDetailSchema,
    VersionListArgsSchema,
    VersionPageSchema,
    VersionPatchSchema,
    VersionSchema,
)
from registry_service.services.container import get_services
from registry_service.services.models import TagPatch

blp = Blueprint(
    "models",
    __name__,
    url_prefix="/models",
    description="Registered models and versions (stage and alias moves go "
    "through promotion requests)",
)


def _models():
    return get_services().models


@blp.route("")
class Models(MethodView):
    @blp.requires()
    @blp.arguments(ModelListArgsSchema, location="query")
    @blp.response(200, ModelPageSchema)
    def get(self, args):
        """List registered models"""
        page = _models().list_models(args["name_prefix"], args["max_results"], args["page_token"])
        return {"models": page.items, "next_page_token": page.next_page_token}

    @blp.requires(Role.REQUESTER)
    @blp.arguments(ModelCreateSchema)
    @blp.response(201, ModelSchema)
    def post(self, body):
        """Create a registered model"""
        return _models().create_model(
            current_context(), body["name"], body["description"], body["tags"]
        )


@blp.route("/<string:name>")
class Model(MethodView):
    @blp.requires()
    @blp.response(200, ModelSchema)
    def get(self, name):
        """Show a registered model"""
        return _models().get_model(name)

    @blp.requires(Role.REQUESTER)
    @blp.arguments(ModelPatchSchema)
    @blp.response(200, ModelSchema)
    def patch(self, body, name):
        """Update a model's description or tags"""
        return _models().update_model(
            current_context(), name, body["description"], TagPatch.parse(body["tags"])
        )


@blp.route("/<string:name>/versions")
class Versions(MethodView):
    @blp.requires()
    @blp.arguments(VersionListArgsSchema, location="query")
    @blp.response(200, VersionPageSchema)
    def get(self, args, name):
        """List a model's versions, newest first"""
        stage = Stage.parse(args["stage"]) if args["stage"] else None
        page = _models().list_versions(name, stage, args["max_results"], args["page_token"])
        return {"versions": page.items, "next_page_token": page.next_page_token}

    @blp.requires(Role.REQUESTER)
    @blp.arguments(VersionCreateSchema)
    @blp.response(201, VersionDetailSchema)
    def post(self, body, name):
        """Register a new version from a run, recording its lineage"""
        return _models().register_version(
            current_context(),
            name,
            body["run_id"],
            body["artifact_path"],
            body["description"],
            body["tags"],
        )


@blp.route("/<string:name>/versions/<id:version>")
class Version(MethodView):
    @blp.requires()
    @blp.arguments(VersionArgsSchema, location="query")
    @blp.response(200, VersionDetailSchema)
    def get(self, args, name, version):
        """Show a version with its lineage; include=run adds its run as it is now"""
        return _models().get_version(name, version, include_run="run" in args["include"])

    @blp.requires(Role.REQUESTER)
    @blp.arguments(VersionPatchSchema)
    @blp.response(200, VersionSchema)
    def patch(self, body, name, version):
        """Update a version's description or tags"""
        return _models().update_version(
            current_context(), name, version, body["description"], TagPatch.parse(body["tags"])
        )


@blp.route("/<string:name>/compare")
class Compare(MethodView):
    @blp.requires()
    @blp.arguments(CompareArgsSchema, location="query")
    @blp.response(200, ComparisonSchema)
    def get(self, args, name):
        """Compare versions' metrics and params side by side"""
        return _models().compare(name, args["versions"])
