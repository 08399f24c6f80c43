"""Who the caller is."""

from __future__ import annotations

from flask import g
from flask.views import MethodView

from registry_service.api import Blueprint
from registry_service.resources.auth.schemas import PrincipalSchema

blp = Blueprint("auth", __name__, url_prefix="/auth", description="The calling principal")


@blp.route("/whoami")
class WhoAmI(MethodView):
    @blp.requires()
    @blp.response(200, PrincipalSchema)
    def get(self):
        """Show the principal and roles behind the bearer token"""
        return {
            "name": g.principal.name,
            "roles": sorted(g.principal.roles),
            "groups": sorted(g.principal.groups),
            "kind": g.principal.kind,
        }
