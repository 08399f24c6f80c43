"""The Idempotency-Key header on calls that open requests: a retried call with the same
key and body gets the first call's response (and ``Idempotent-Replayed: true``)
instead of a second effect."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flask import Response, g, request

from registry_service.api import PROBLEM_MIMETYPE, handle_registry_error
from registry_service.errors import RegistryError, status_for
from registry_service.services.container import get_services
from registry_service.services.idempotency import fingerprint

HEADER = "Idempotency-Key"
PARAMETER = {
    "in": "header",
    "name": HEADER,
    "required": False,
    "schema": {"type": "string", "maxLength": 255},
    "description": "Retries with the same key and body get the first response; the same "
    "key with another body is refused (422); while the first call runs, a retry gets 409",
}


def json_response(
    body: Any, status: int, headers: dict[str, str] | None = None, replayed: bool = False
) -> Response:
    mimetype = PROBLEM_MIMETYPE if status >= 400 else "application/json"
    response = Response(json.dumps(body, ensure_ascii=False), status=status, mimetype=mimetype)
    response.headers.update(headers or {})
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def _no_headers(body: Any, status: int) -> dict[str, str]:
    return {}


def once(
    call: Callable[[], tuple[Any, int]],
    headers: Callable[[Any, int], dict[str, str]] = _no_headers,
) -> Response:
    """Run ``call`` (it returns the body, already serialised, and the status) at most
    once per key; ``headers`` gives a body's headers, on the first answer and on
    replays. Problems below 500 are remembered too; a failure of ours (500 and above)
    frees the key, so the client's retry runs."""
    key = request.headers.get(HEADER)
    if key is None:
        body, status = call()
        return json_response(body, status, headers(body, status))
    keys = get_services().idempotency
    principal = g.principal.name
    sent: Any = request.get_json(silent=True)
    if_match = request.headers.get("If-Match")
    if if_match is not None:
        sent = {"body": sent, "if_match": if_match}
    stored = keys.begin(principal, key, fingerprint(request.method, request.path, sent))
    if stored is not None:
        extra = headers(stored.body, stored.status) if stored.status < 400 else {}
        return json_response(stored.body, stored.status, extra, replayed=True)
    completed = False
    try:
        try:
            body, status = call()
        except RegistryError as error:
            if status_for(error) >= 500:
                raise
            body, status, _ = handle_registry_error(error)
        keys.complete(principal, key, status, body)
        completed = True
    finally:
        if not completed:
            keys.release(principal, key)
    return json_response(body, status, headers(body, status) if status < 400 else {})
