"""Our Api, Blueprint and Schema: the one place flask-smorest is specialised."""

from __future__ import annotations

import http
import logging
from collections.abc import Callable
from functools import wraps

import flask_smorest
import marshmallow as ma
from flask import g, request
from flask_smorest.utils import prepare_response
from werkzeug.exceptions import HTTPException
from werkzeug.routing import IntegerConverter

from registry_service.auth import authenticate_request
from registry_service.domain.entities import Role
from registry_service.domain.names import INT32_MAX
from registry_service.errors import (
    PermissionDenied,
    RegistryError,
    field_errors,
    problem_body,
    status_for,
)
from registry_service.input_guard import check_request_input

log = logging.getLogger(__name__)

PROBLEM_MIMETYPE = "application/problem+json"
BEARER = "bearerAuth"
PREDICTOR_ONLY = frozenset({Role.PREDICTOR.value})


class Schema(ma.Schema):
    """Base schema: unknown fields are errors, not silently dropped.

    A request body schema sets ``example``: it becomes the body Swagger UI pre-fills.
    """

    example: dict | None = None

    class Meta:
        unknown = ma.RAISE


class Integer(ma.fields.Integer):
    """An integer that refuses what marshmallow would silently truncate (``1.5`` to 1)
    and anything beyond the 32-bit range MLflow and our tables store."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.validators.insert(0, ma.validate.Range(min=-INT32_MAX - 1, max=INT32_MAX))

    def _validated(self, value):
        if isinstance(value, float) and not value.is_integer():
            raise self.make_error("invalid", input=value)
        return super()._validated(value)


class IdConverter(IntegerConverter):
    """A positive 32-bit id or version in a path: larger values are no route (404)."""

    def __init__(self, url_map, *args, **kwargs) -> None:
        super().__init__(url_map, min=1, max=INT32_MAX)


class ProblemFieldSchema(Schema):
    field = ma.fields.String(metadata={"description": "Dotted path of the offending field"})
    location = ma.fields.String(allow_none=True, metadata={"description": "json, query, path"})
    message = ma.fields.String()


class ProblemSchema(Schema):
    """RFC 9457 problem details; a problem may carry more members than those listed."""

    class Meta:
        unknown = ma.INCLUDE

    type = ma.fields.String(metadata={"description": "URI reference naming the problem type"})
    title = ma.fields.String()
    status = ma.fields.Integer()
    detail = ma.fields.String()
    code = ma.fields.String(metadata={"description": "Stable machine-readable error code"})
    instance = ma.fields.String()
    request_id = ma.fields.String()
    errors = ma.fields.List(ma.fields.Nested(ProblemFieldSchema))
    required_role = ma.fields.String(metadata={"description": "403: the role the call needs"})
    existing_request_id = ma.fields.Integer(
        metadata={"description": "409 open-request-exists: the request already open"}
    )
    request_status = ma.fields.String(
        metadata={"description": "409: the status that forbids the transition"}
    )
    eligible_approvers = ma.fields.List(
        ma.fields.String(), metadata={"description": "409 quorum-unreachable"}
    )
    reverted = ma.fields.Boolean(
        metadata={"description": "not-recorded: whether the MLflow change was undone"}
    )
    metric = ma.fields.String(metadata={"description": "The metric a problem is about"})
    intent_id = Integer(
        metadata={"description": "outcome-unknown: the recorded intent the sweep settles"}
    )
    applied = ma.fields.String(
        metadata={
            "description": "applied-despite-error: full or partial",
            "enum": ["full", "partial"],
        }
    )
    audit_seq = Integer(metadata={"description": "The audit event that recorded the change"})
    accepted = ma.fields.List(
        ma.fields.String(), metadata={"description": "415: the media types accepted"}
    )


def problem_response(body: dict, headers: dict | None = None):
    return body, body["status"], {"Content-Type": PROBLEM_MIMETYPE, **(headers or {})}


def _request_extras() -> dict:
    return {"instance": request.path, "request_id": g.get("request_id")}


def handle_registry_error(error: RegistryError):
    status = status_for(error)
    if status >= 500:
        log.error(
            "request %s failed: %s",
            g.get("request_id"),
            error.detail,
            exc_info=error.__cause__ or error,
        )
    headers = {"WWW-Authenticate": 'Bearer realm="registry-service"'} if status == 401 else None
    extra = {k: v for k, v in error.extra.items() if k not in {"instance", "request_id"}}
    body = problem_body(
        status=status,
        code=error.code,
        title=error.title,
        detail=error.detail,
        errors=error.errors,
        **_request_extras(),
        **extra,
    )
    return problem_response(body, headers)


class Api(flask_smorest.Api):
    ERROR_SCHEMA = ProblemSchema

    def _register_responses(self):
        """flask-smorest's shared responses, with errors documented as the
        application/problem+json they are served as."""
        for status in http.HTTPStatus:
            response: dict = {"description": status.phrase}
            content_type = self.DEFAULT_RESPONSE_CONTENT_TYPE
            if status >= 400:
                response["schema"] = self.ERROR_SCHEMA
                content_type = PROBLEM_MIMETYPE
            prepare_response(response, self.spec, content_type)
            self.spec.components.response(status.name, response, lazy=True)
        response = {"description": "Default error response", "schema": self.ERROR_SCHEMA}
        prepare_response(response, self.spec, PROBLEM_MIMETYPE)
        self.spec.components.response(self.DEFAULT_ERROR_RESPONSE_NAME, response, lazy=True)

    def handle_http_exception(self, error: HTTPException):
        data = getattr(error, "data", None) or {}
        status = error.code or 500
        if status >= 500:
            original = getattr(error, "original_exception", None)
            log.error("unhandled error in request %s", g.get("request_id"), exc_info=original)
            body = problem_body(
                status=500,
                code="internal-error",
                title="Internal server error",
                detail="the server failed to handle the request; "
                "quote the request id when reporting it",
                **_request_extras(),
            )
            return problem_response(body)
        messages = data.get("errors") or data.get("messages")
        errors = []
        if isinstance(messages, dict):
            for location, fields in messages.items():
                errors.extend(field_errors(fields, location))
        if status == 422:
            code, title, detail = (
                "validation-error",
                "Request validation failed",
                ("the request did not pass validation; see errors"),
            )
        else:
            code, title = error.name.lower().replace(" ", "-"), error.name
            detail = "the request could not be parsed; see errors" if errors else error.description
        body = problem_body(
            status=status,
            code=code,
            title=title,
            detail=data.get("message") or detail,
            errors=errors,
            **_request_extras(),
        )
        return problem_response(body, data.get("headers"))


class Blueprint(flask_smorest.Blueprint):
    """Blueprints of the authenticated API: every view needs a bearer token."""

    def __init__(self, *args, public: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.public = public
        if not public:
            self.before_request(_authenticate)
        self.before_request(check_request_input)

    def arguments(self, schema, *args, **kwargs):
        """As flask-smorest's, with the schema's own ``example`` documented for bodies."""
        example = getattr(schema, "example", None)
        location = kwargs.get("location", "json")
        if location == "json" and example is not None:
            kwargs.setdefault("example", example)
        if location == "query":
            # webargs ignores unknown query parameters; a misspelt filter (?stauts=)
            # would silently list everything.
            kwargs.setdefault("unknown", ma.RAISE)
        return super().arguments(schema, *args, **kwargs)

    def requires(self, role: Role | None = None, *, predictor: bool = False) -> Callable:
        """Document bearer auth on a view and, with ``role``, enforce it first.

        Tokens holding only the predictor role reach views marked ``predictor``.
        """

        def decorator(func):
            @wraps(func)
            def wrapper(*args, **kwargs):
                principal = g.principal
                if not predictor and principal.roles == PREDICTOR_ONLY:
                    raise PermissionDenied(
                        f"{principal.name!r} holds only the 'predictor' role, which may "
                        "only ask for predictions",
                        required_role=(role or Role.VIEWER).value,
                    )
                if role is not None and not principal.has_role(role):
                    raise PermissionDenied(
                        f"{principal.name!r} lacks the {role.value!r} role this needs",
                        required_role=role.value,
                    )
                return func(*args, **kwargs)

            wrapper = self.doc(security=[{BEARER: []}])(wrapper)
            wrapper = self.alt_response(
                401,
                schema=ProblemSchema,
                description="Missing, invalid, expired or revoked token",
                content_type=PROBLEM_MIMETYPE,
            )(wrapper)
            if role is not None:
                wrapper = self.alt_response(
                    403,
                    schema=ProblemSchema,
                    description=f"Requires the {role.value} role",
                    content_type=PROBLEM_MIMETYPE,
                )(wrapper)
            return wrapper

        return decorator

    def problems(self, **described: str) -> Callable:
        """Document problem+json answers, e.g. ``problems(conflict="Already approved")``."""
        statuses = {
            "forbidden": 403,
            "not_found": 404,
            "conflict": 409,
            "precondition_failed": 412,
            "precondition_required": 428,
            "unavailable": 503,
        }

        def decorator(func):
            for name, description in described.items():
                func = self.alt_response(
                    statuses[name],
                    schema=ProblemSchema,
                    description=description,
                    content_type=PROBLEM_MIMETYPE,
                )(func)
            return func

        return decorator


def _authenticate() -> None:
    g.principal = authenticate_request()
