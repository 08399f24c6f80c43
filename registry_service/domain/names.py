"""Strict patterns for names that reach MLflow, so no input can bend a filter string."""

from __future__ import annotations

import re

from registry_service.errors import ValidationError

MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ALIAS_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
# MLflow reserves "latest" and "v<digits>" for its own alias resolution.
RESERVED_ALIAS_RE = re.compile(r"^(latest|v\d+)$")
TAG_KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/:]{0,249}$")
RUN_ID_RE = re.compile(r"^[0-9a-f]{32}$")
ARTIFACT_PATH_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*$")
PRINCIPAL_RE = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,127}$")
TAG_VALUE_MAX = 5000
# Below what MLflow takes in one call, so one request never becomes a write MLflow can
# only half finish before a timeout.
TAGS_PER_REQUEST_MAX = 100
TAGS_PER_OBJECT_MAX = 500
# MLflow stores versions and our tables store ids as 32-bit integers.
INT32_MAX = 2**31 - 1
# Tags under these prefixes are written by MLflow or by us, never by callers.
RESERVED_TAG_PREFIXES = ("mlflow.", "registry.")

MODEL_NAME_RULE = "1-128 characters: letters, digits, '.', '_' or '-', starting alphanumeric"
ALIAS_RULE = "lowercase letter, then up to 62 of a-z 0-9 _ -; not 'latest' or 'v<number>'"


def check_model_name(name: str, field: str = "name", location: str = "path") -> str:
    if not MODEL_NAME_RE.match(name or ""):
        raise ValidationError(
            f"invalid model name {name!r}",
            errors=[{"field": field, "location": location, "message": MODEL_NAME_RULE}],
        )
    return name


def check_alias(alias: str, field: str = "alias") -> str:
    if not ALIAS_RE.match(alias or "") or RESERVED_ALIAS_RE.match(alias):
        raise ValidationError(
            f"invalid alias {alias!r}",
            errors=[{"field": field, "location": "json", "message": ALIAS_RULE}],
        )
    return alias
