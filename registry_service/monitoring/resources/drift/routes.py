"""Drift: what a version was trained on, and whether its live inputs still look like it."""

from __future__ import annotations

import csv
import io

import marshmallow as ma
from flask import request
from flask.views import MethodView

from registry_service.api import Blueprint
from registry_service.auth import current_context
from registry_service.domain.entities import Role
from registry_service.domain.profile import MAX_FEATURES
from registry_service.errors import (
    BadRequest,
    UnsupportedMediaType,
    ValidationError,
    field_errors,
)
from registry_service.monitoring.resources.drift.schemas import (
    DriftArgsSchema,
    DriftSchema,
    ReferenceArgsSchema,
    ReferenceInSchema,
    ReferenceSchema,
)
from registry_service.services.container import get_services

blp = Blueprint(
    "drift",
    __name__,
    url_prefix="/models",
    description="Drift of live inputs and predictions against each version's reference",
)

_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": ReferenceInSchema,
                "example": ReferenceInSchema.example,
            },
            "text/csv": {
                "schema": {"type": "string"},
                "example": "age,plan\n41,pro\n29,free\n",
            },
        },
    }
}


def _csv_columns(raw: bytes, prediction_column: str | None):
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest("the CSV body is not UTF-8") from None
    if "\x00" in text:
        raise BadRequest("the CSV body holds a NUL character")
    try:
        reader = csv.reader(io.StringIO(text))
        header = next(reader, None)
        rows = list(reader)
    except csv.Error as exc:
        raise BadRequest(f"the CSV body could not be read: {exc}") from None
    if not header or not rows:
        raise ValidationError(
            "the CSV needs a header row and at least one data row",
            errors=[{"field": "_body", "location": "body", "message": "header and rows"}],
        )
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise ValidationError(
            f"the CSV header names {', '.join(map(repr, duplicates))} more than once",
            errors=[{"field": "_body", "location": "body", "message": "duplicate column names"}],
        )
    if len(header) > MAX_FEATURES:
        raise _too_many_columns(len(header))
    columns: dict[str, list] = {name: [] for name in header}
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise ValidationError(
                f"CSV line {number} has {len(row)} cells for {len(header)} columns",
                errors=[{"field": "_body", "location": "body", "message": "ragged rows"}],
            )
        for name, value in zip(header, row, strict=True):
            columns[name].append(_cell(value))
    predictions = None
    if prediction_column is not None:
        if prediction_column not in columns:
            raise ValidationError(
                f"no column {prediction_column!r} in the CSV header",
                errors=[{"field": "prediction_column", "location": "query", "message": "absent"}],
            )
        predictions = columns.pop(prediction_column)
    return columns, predictions


def _too_many_columns(count: int) -> ValidationError:
    return ValidationError(
        f"{count} or more columns: a reference profiles at most {MAX_FEATURES} features",
        errors=[{"field": "records", "location": "json", "message": f"at most {MAX_FEATURES}"}],
    )


def _cell(value: str):
    """CSV cells are text: numbers read as numbers, empty as missing."""
    if value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        return value
    return int(number) if number.is_integer() and "." not in value else number


def _json_columns(body):
    try:
        data = ReferenceInSchema().load(body if isinstance(body, dict) else {})
    except ma.ValidationError as exc:
        raise ValidationError(
            "the reference did not pass validation; see errors",
            errors=field_errors(exc.messages, "json"),
        ) from None
    columns: dict[str, list] = {}
    for i, record in enumerate(data["records"]):
        for key in record:
            if key not in columns and len(columns) >= MAX_FEATURES:
                raise _too_many_columns(len(columns) + 1)
            columns.setdefault(key, [None] * i)
        for key, values in columns.items():
            value = record.get(key)
            values.append(
                value
                if value is None or isinstance(value, str | int | float | bool)
                else str(value)
            )
    return columns, data["predictions"]


@blp.route("/<string:name>/versions/<int:version>/reference")
class VersionReference(MethodView):
    # Read by the input guard: this view takes text/csv as well as JSON.
    accepts = ("text/csv",)

    @blp.requires()
    @blp.response(200, ReferenceSchema)
    @blp.problems(not_found="No such model or version, or no reference")
    def get(self, name, version):
        """Show a version's reference profile"""
        return get_services().monitoring.get_reference(name, version)

    @blp.requires(Role.APPROVER)
    @blp.arguments(ReferenceArgsSchema, location="query")
    @blp.doc(**_BODY_DOC)
    @blp.response(200, ReferenceSchema)
    @blp.problems(not_found="No such model or version")
    def put(self, args, name, version):
        """Set a version's reference from a sample, as JSON records or CSV (audited)"""
        if request.mimetype == "text/csv":
            columns, predictions = _csv_columns(request.get_data(), args["prediction_column"])
        elif request.is_json:
            columns, predictions = _json_columns(request.get_json())
        else:
            raise UnsupportedMediaType(
                "send application/json records or text/csv",
                accepted=["application/json", "text/csv"],
            )
        return get_services().monitoring.put_reference(
            current_context(), name, version, columns, predictions
        )


@blp.route("/<string:name>/drift")
class Drift(MethodView):
    @blp.requires()
    @blp.arguments(DriftArgsSchema, location="query")
    @blp.response(200, DriftSchema)
    @blp.problems(not_found="No such model or version")
    def get(self, args, name):
        """Show PSI and KS / chi-square per feature and for predictions, with the verdict"""
        return get_services().monitoring.drift(
            name, args["since"], args["until"], version=args["version"]
        )
