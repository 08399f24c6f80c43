"""Checks every request's input before a view sees it: what JSON and our storage cannot
carry is refused as a problem naming the field, never left to fail as a 500 deeper in.

PostgreSQL refuses NUL in text, UTF-8 cannot encode a lone surrogate, and Python's JSON
parser recurses once per nesting level.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import current_app, request

from registry_service.errors import BadRequest, UnsupportedMediaType, ValidationError

MAX_JSON_DEPTH = 32
_SURROGATE = re.compile("[\ud800-\udfff]")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def text_problem(value: str) -> str | None:
    if "\x00" in value:
        return "must not contain NUL characters"
    if _SURROGATE.search(value):
        return "must be valid Unicode text (a lone surrogate is not)"
    return None


def _walk(value: Any, path: str, depth: int, errors: list[dict]) -> None:
    if depth > MAX_JSON_DEPTH:
        errors.append(
            {
                "field": path or "_body",
                "location": "json",
                "message": f"nested deeper than {MAX_JSON_DEPTH} levels",
            }
        )
        return
    if isinstance(value, str):
        problem = text_problem(value)
        if problem:
            errors.append({"field": path or "_body", "location": "json", "message": problem})
    elif isinstance(value, dict):
        for key, item in value.items():
            name = f"{path}.{key}" if path else str(key)
            problem = text_problem(key)
            if problem:
                errors.append({"field": name, "location": "json", "message": f"key {problem}"})
            _walk(item, name, depth + 1, errors)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _walk(item, f"{path}.{index}" if path else str(index), depth + 1, errors)


def _is_json(mimetype: str) -> bool:
    return mimetype == "application/json" or mimetype.endswith("+json")


def _other_types_accepted() -> tuple[str, ...]:
    """Media types besides JSON the matched view declares in ``accepts``."""
    view = current_app.view_functions.get(request.endpoint or "")
    return getattr(getattr(view, "view_class", None), "accepts", ())


def check_request_input() -> None:
    """Refuse bad query strings, path values and bodies; 413 comes from Flask's
    MAX_CONTENT_LENGTH when the body is read."""
    errors: list[dict] = []
    for location, values in (
        ("query", request.args.items(multi=True)),
        ("path", (request.view_args or {}).items()),
    ):
        for name, value in values:
            problem = isinstance(value, str) and text_problem(value)
            if problem:
                errors.append({"field": name, "location": location, "message": problem})
    if request.method in BODY_METHODS:
        raw = request.get_data(cache=True)
        if raw and request.mimetype in _other_types_accepted():
            pass  # the view reads (and checks) its own non-JSON body
        elif raw:
            if not _is_json(request.mimetype):
                raise UnsupportedMediaType(
                    f"send the body as application/json, not {request.mimetype or 'untyped'}",
                    accepted=["application/json"],
                )
            try:
                body = json.loads(raw)
            except RecursionError:
                raise BadRequest(
                    f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels"
                ) from None
            except ValueError as exc:
                raise BadRequest(f"the body is not valid JSON: {exc}") from None
            _walk(body, "", 0, errors)
    if errors:
        raise ValidationError("the request holds values the registry cannot store", errors=errors)
