"""What the answering serving process has loaded and routes to."""

from __future__ import annotations

import os

from flask.views import MethodView

from registry_service.api import Blueprint
from registry_service.services.container import get_services
from registry_service.serving.resources.status.schemas import ServingStatusSchema

blp = Blueprint(
    "serving",
    __name__,
    url_prefix="/serving",
    description="Serving processes: loaded models, load times, hits, routes",
)


@blp.route("/models")
class ServingModels(MethodView):
    @blp.requires()
    @blp.response(200, ServingStatusSchema)
    def get(self):
        """Models this process has loaded, with load time and hits, and its routes"""
        return get_services().serving.status() | {"process": os.getpid()}
