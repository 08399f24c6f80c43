"""The scheduler's jobs: what runs inside the service, when it last ran and how."""

from __future__ import annotations

from flask.views import MethodView

from registry_service.api import Blueprint
from registry_service.scheduler.resources.jobs.schemas import JobsSchema
from registry_service.services.container import get_services

blp = Blueprint(
    "jobs",
    __name__,
    url_prefix="/jobs",
    description="Housekeeping run inside the service by one process at a time",
)


@blp.route("")
class Jobs(MethodView):
    @blp.requires()
    @blp.response(200, JobsSchema)
    def get(self):
        """List the scheduled jobs with their last run, duration and outcome"""
        scheduler = get_services().scheduler
        return {"leader_here": scheduler.leading, "jobs": scheduler.states()}
