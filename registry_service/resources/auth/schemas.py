"""Schemas of the auth resource."""

from __future__ import annotations

import marshmallow as ma

from registry_service.api import Schema


class PrincipalSchema(Schema):
    name = ma.fields.String()
    roles = ma.fields.List(ma.fields.String())
    groups = ma.fields.List(ma.fields.String(), metadata={"description": "Approver groups"})
    kind = ma.fields.String(
        metadata={"description": "Kind of the token in use: human, ci or agent"}
    )
