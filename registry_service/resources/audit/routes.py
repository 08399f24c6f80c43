"""The audit log of every change."""

from __future__ import annotations

from flask import request
from flask.views import MethodView

from registry_service.api import Blueprint
from registry_service.auth import current_context
from registry_service.resources.audit.schemas import (
    AuditArgsSchema,
    AuditHeadSchema,
    AuditPageSchema,
    AuditVerificationSchema,
    AuditVerifyArgsSchema,
    VerificationJobSchema,
    VerificationStartSchema,
)
from registry_service.services.audit import AuditFilter
from registry_service.services.container import get_services

blp = Blueprint(
    "audit",
    __name__,
    url_prefix="/audit",
    description="Append-only, hash-chained log of every change",
)


@blp.route("")
class AuditEvents(MethodView):
    @blp.requires()
    @blp.arguments(AuditArgsSchema, location="query")
    @blp.response(200, AuditPageSchema)
    def get(self, args):
        """List audit events, newest first"""
        filters = AuditFilter(
            model_name=args["model"],
            model_version=args["version"],
            actor=args["actor"],
            action=args["action"],
            subject=args["subject"],
            since=args["since"],
            until=args["until"],
        )
        page = get_services().audit.list(filters, args["max_results"], args["page_token"])
        return {"events": page.items, "next_page_token": page.next_page_token}


@blp.route("/head")
class AuditHead(MethodView):
    @blp.requires()
    @blp.response(200, AuditHeadSchema)
    def get(self):
        """Latest sequence number and hash, for export elsewhere"""
        seq, digest = get_services().audit.head()
        return {"seq": seq, "hash": digest}


@blp.route("/verify")
class AuditVerify(MethodView):
    @blp.requires()
    @blp.arguments(AuditVerifyArgsSchema, location="query")
    @blp.response(200, AuditVerificationSchema)
    def get(self, args):
        """Recompute the hash chain now (whole, or after a checkpoint); long chains: POST
        /audit/verifications"""
        return get_services().audit.verify(args["after_seq"], args["after_hash"])


@blp.route("/verifications")
class AuditVerifications(MethodView):
    @blp.requires()
    @blp.arguments(VerificationStartSchema)
    @blp.response(202, VerificationJobSchema)
    def post(self, body):
        """Start verifying the chain in the background; poll the job it returns"""
        job = get_services().verifications.start(
            current_context(), body["after_seq"], body["after_hash"]
        )
        return job, 202, {"Location": f"{request.path}/{job.id}"}


@blp.route("/verifications/<id:job_id>")
class AuditVerificationJob(MethodView):
    @blp.requires()
    @blp.response(200, VerificationJobSchema)
    @blp.problems(not_found="No such verification")
    def get(self, job_id):
        """A background verification: running, done (with the result), failed or interrupted"""
        return get_services().verifications.get(job_id)
