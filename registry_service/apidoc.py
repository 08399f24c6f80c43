"""Render the OpenAPI document as a Markdown API reference (docs/API.md).

python -m registry_service.apidoc > docs/API.md
"""

from __future__ import annotations

import sys
import tempfile
from typing import Any

METHODS = ("get", "post", "put", "patch", "delete")


def openapi_spec() -> dict[str, Any]:
    from registry_service.app import create_app

    with tempfile.TemporaryDirectory() as tmp:
        # A throwaway embedded default: the spec does not depend on any data.
        app = create_app(
            {
                "database_url": f"sqlite:///{tmp}/r.db",
                "mlflow_tracking_uri": f"sqlite:///{tmp}/m.db",
                "mlflow_registry_uri": f"sqlite:///{tmp}/m.db",
                "artifact_root": f"{tmp}/artifacts",
            }
        )
        with app.test_request_context():
            spec = app.extensions["flask-smorest"]["apis"][""]["ext_obj"].spec.to_dict()
        app.extensions["registry_service"].close()
    return spec


def _schema_name(ref: dict[str, Any] | None) -> str:
    if not ref:
        return ""
    if "$ref" in ref:
        return ref["$ref"].rsplit("/", 1)[-1]
    kind = ref.get("type", "")
    nullable = isinstance(kind, list) and "null" in kind
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "")
    if kind == "array":
        kind = f"list of {_schema_name(ref.get('items'))}"
    if "enum" in ref:
        kind += " (" + ", ".join(str(v) for v in ref["enum"] if v is not None) + ")"
    return kind + (" or null" if nullable else "")


def render(spec: dict[str, Any]) -> str:
    out = [
        f"# {spec['info']['title']} API reference ({spec['info']['version']})",
        "",
        "Generated from the OpenAPI document by `python -m registry_service.apidoc`; "
        "do not edit by hand. Errors are RFC 9457 problems (`application/problem+json`).",
        "",
    ]
    for tag in spec.get("tags", []):
        out += [f"## {tag['name']}", "", tag.get("description", ""), ""]
        for path, item in spec["paths"].items():
            for method in METHODS:
                op = item.get(method)
                if not op or tag["name"] not in op.get("tags", []):
                    continue
                out += [f"### `{method.upper()} {path}`", "", op.get("summary", ""), ""]
                params = [*item.get("parameters", []), *op.get("parameters", [])]
                if params:
                    out += ["| parameter | in | required | description |", "|---|---|---|---|"]
                    for p in params:
                        desc = (p.get("description") or "").replace("|", "/")
                        out.append(
                            f"| `{p['name']}` | {p['in']} | {'yes' if p.get('required') else 'no'}"
                            f" | {desc} |"
                        )
                    out.append("")
                body = op.get("requestBody", {}).get("content", {}).get("application/json")
                if body:
                    out += [f"Body: `{_schema_name(body.get('schema'))}`", ""]
                out += ["| status | meaning |", "|---|---|"]
                for status, response in op.get("responses", {}).items():
                    if status == "default":
                        continue
                    out.append(f"| {status} | {response.get('description', '')} |")
                out.append("")
    out += ["## Schemas", ""]
    for name, schema in sorted(spec.get("components", {}).get("schemas", {}).items()):
        fields = schema.get("properties", {})
        out += [f"### {name}", "", "| field | type | description |", "|---|---|---|"]
        for field_name, prop in fields.items():
            kind = _schema_name(prop)
            desc = (prop.get("description") or "").replace("|", "/").replace("\n", " ")
            out.append(f"| `{field_name}` | {kind} | {desc} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def main() -> None:
    sys.stdout.write(render(openapi_spec()))


if __name__ == "__main__":
    main()
