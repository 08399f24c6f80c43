"""Live figures per served version: latency, traffic, predictions and correctness."""

from __future__ import annotations

from flask.views import MethodView

from registry_service.api import Blueprint
from registry_service.monitoring.resources.figures.schemas import (
    FiguresArgsSchema,
    MonitoringSchema,
)
from registry_service.services.container import get_services

blp = Blueprint(
    "monitoring",
    __name__,
    url_prefix="/models",
    description="Live figures per served version, from per-minute rollups of the prediction log",
)


@blp.route("/<string:name>/monitoring")
class Monitoring(MethodView):
    @blp.requires()
    @blp.arguments(FiguresArgsSchema, location="query")
    @blp.response(200, MonitoringSchema)
    @blp.problems(not_found="No such model")
    def get(self, args, name):
        """Show latency, throughput, errors, predictions and accuracy per version and variant"""
        return get_services().monitoring.report(
            name,
            args["since"],
            args["until"],
            version=args["version"],
            variant=args["variant"],
            interval=args["interval"],
        )
