"""Bearer-token authentication; the acting identity always comes from the token."""

from __future__ import annotations

from flask import g, request

from registry_service.domain.entities import Principal
from registry_service.errors import AuthenticationError
from registry_service.services.container import get_services
from registry_service.services.context import Context


def authenticate_request() -> Principal:
    header = request.headers.get("Authorization", "")
    if not header:
        raise AuthenticationError("send the header 'Authorization: Bearer <token>'")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("the Authorization header must be 'Bearer <token>'")
    return get_services().tokens.authenticate(token.strip())


def current_context() -> Context:
    return Context(
        actor=g.principal.name,
        request_id=g.get("request_id"),
        client_request_id=g.get("client_request_id"),
    )
