"""Our Api, Blueprint and Schema: the one place flask-smorest is specialised."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps

import flask_smorest
import marshmallow as ma
from flask import g, request
from werkzeug.exceptions import HTTPException

from registry_service.auth import authenticate_request
from registry_service.domain.entities import Role
from registry_service.errors import (
    PermissionDenied,
    RegistryError,
    field_errors,
    problem_body,
    status_for,
)

log = logging.getLogger(__name__)

PROBLEM_MIMETYPE = "application/problem+json"
BEARER = "bearerAuth"


class Schema(ma.Schema):
    """Base schema: unknown fields are errors, not silently dropped.

    A request body schema sets ``example``: it becomes the body Swagger UI pre-fills.
    """

    example: dict | None = None

    class Meta:
        unknown = ma.RAISE


class ProblemFieldSchema(Schema):
    field = ma.fields.String(metadata={"description": "Dotted path of the offending field"})
    location = ma.fields.String(allow_none=True, metadata={"description": "json, query, path"})
    message = ma.fields.String()


class ProblemSchema(Schema):
    """RFC 9457 problem details."""

    type = ma.fields.String(metadata={"description": "URI reference naming the problem type"})
    title = ma.fields.String()
    status = ma.fields.Integer()
    detail = ma.fields.String()
    code = ma.fields.String(metadata={"description": "Stable machine-readable error code"})
    instance = ma.fields.String()
    request_id = ma.fields.String()
    errors = ma.fields.List(ma.fields.Nested(ProblemFieldSchema))


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

    def arguments(self, schema, *args, **kwargs):
        """As flask-smorest's, with the schema's own ``example`` documented for bodies."""
        example = getattr(schema, "example", None)
        if kwargs.get("location", "json") == "json" and example is not None:
            kwargs.setdefault("example", example)
        return super().arguments(schema, *args, **kwargs)

    def requires(self, role: Role | None = None) -> Callable:
        """Document bearer auth on a view and, with ``role``, enforce it first."""

        def decorator(func):
            @wraps(func)
            def wrapper(*args, **kwargs):
                principal = g.principal
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
        statuses = {"not_found": 404, "conflict": 409, "unavailable": 503}

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
