"""A version's signed manifest, and checking its artifacts against it again."""

from __future__ import annotations

from flask.views import MethodView

from registry_service.api import Blueprint
from registry_service.resources.integrity.schemas import ManifestSchema, VerificationSchema
from registry_service.services.container import get_services

blp = Blueprint(
    "integrity",
    __name__,
    url_prefix="/models",
    description="Artifact integrity: each version's files, signed at registration, "
    "checked before serving loads them",
)


@blp.route("/<string:name>/versions/<id:version>/manifest")
class VersionManifest(MethodView):
    @blp.requires()
    @blp.response(200, ManifestSchema)
    @blp.problems(not_found="No such model or version, or no manifest recorded for it")
    def get(self, name, version):
        """Show a version's signed manifest and the public key that checks it"""
        return get_services().integrity.manifest(name, version)


@blp.route("/<string:name>/versions/<id:version>/verify")
class VersionVerify(MethodView):
    @blp.requires()
    @blp.response(200, VerificationSchema)
    @blp.problems(not_found="No such model or version", unavailable="MLflow is unavailable")
    def post(self, name, version):
        """Download a version again and check it against its signed manifest"""
        return get_services().integrity.verify(name, version)
