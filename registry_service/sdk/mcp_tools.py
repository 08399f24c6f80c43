"""`registry-service mcp`: the registry as MCP tools for AI assistants.

Every tool is one call to the REST API with the token the server was started with, so
the caller's roles, the model policies and the audit log apply exactly as they do to a
person; nothing here talks to MLflow. Tool descriptions and input schemas are read from
the service's own OpenAPI document, which flask-smorest builds from the marshmallow
schemas that validate the REST requests: one source for both.
"""

from __future__ import annotations

import copy
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from registry_service.sdk.client import ApiProblem, RegistryClient, Unreachable

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
MAX_REF_DEPTH = 12
# The assistant's vocabulary, each one REST operation: (tool, method, path).
OPERATIONS: tuple[tuple[str, str, str], ...] = (
    ("whoami", "GET", "/auth/whoami"),
    ("search_experiments", "GET", "/experiments"),
    ("search_runs", "GET", "/experiments/{experiment_id}/runs"),
    ("best_run", "GET", "/experiments/{experiment_id}/best-run"),
    ("get_run", "GET", "/runs/{run_id}"),
    ("compare_runs", "GET", "/runs/compare"),
    ("list_models", "GET", "/models"),
    ("create_model", "POST", "/models"),
    ("show_model", "GET", "/models/{name}"),
    ("list_versions", "GET", "/models/{name}/versions"),
    ("compare_versions", "GET", "/models/{name}/compare"),
    ("register_version", "POST", "/models/{name}/versions"),
    ("evaluate_version", "POST", "/models/{name}/versions/{version}/evaluate"),
    ("request_promotion", "POST", "/promotions"),
    ("promotion_status", "GET", "/promotions/{request_id}"),
    ("approve_promotion", "POST", "/promotions/{request_id}/approve"),
    ("model_history", "GET", "/models/{name}/history"),
    ("audit_tail", "GET", "/audit"),
    ("monitoring", "GET", "/models/{name}/monitoring"),
    ("drift", "GET", "/models/{name}/drift"),
)


@dataclass(frozen=True)
class ToolSpec:
    name: str
    method: str
    path: str
    description: str
    input_schema: dict[str, Any]
    path_params: tuple[str, ...]
    query_params: tuple[str, ...]
    body_fields: tuple[str, ...]
    delimited: tuple[str, ...] = ()  # arrays sent comma-separated (explode: false)


def _resolve(node: Any, spec: dict[str, Any], depth: int = 0) -> Any:
    """``node`` with every ``$ref`` into ``components`` replaced by what it names."""
    if depth > MAX_REF_DEPTH:
        return {}
    if isinstance(node, dict):
        if "$ref" in node:
            target: Any = spec
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return _resolve(target, spec, depth + 1)
        return {k: _resolve(v, spec, depth) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, spec, depth) for v in node]
    return node


def build_tools(spec: dict[str, Any]) -> dict[str, ToolSpec]:
    """The tools, described and typed by the OpenAPI document of the running service."""
    tools = {}
    for name, method, path in OPERATIONS:
        item = spec["paths"][API_PREFIX + path]
        operation = item[method.lower()]
        properties: dict[str, Any] = {}
        required: list[str] = []
        path_params, query_params, body_fields, delimited = [], [], [], []
        # Path parameters are declared once per path, the rest per operation.
        declared = [*item.get("parameters", []), *operation.get("parameters", [])]
        for param in _resolve(declared, spec):
            if param["in"] not in ("path", "query"):
                continue
            schema = copy.deepcopy(param.get("schema", {}))
            if param.get("description"):
                schema.setdefault("description", param["description"])
            properties[param["name"]] = schema
            if param.get("required"):
                required.append(param["name"])
            (path_params if param["in"] == "path" else query_params).append(param["name"])
            if param.get("explode") is False:
                delimited.append(param["name"])
        body = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if body is not None:
            schema = _resolve(body["schema"], spec)
            for field, field_schema in schema.get("properties", {}).items():
                if field in properties:
                    raise ValueError(f"{name}: {field!r} is both a parameter and a body field")
                if field_schema.get("readOnly"):
                    continue
                properties[field] = field_schema
                body_fields.append(field)
            required += [f for f in schema.get("required", []) if f in body_fields]
        summary = operation.get("summary", "")
        detail = operation.get("description", "")
        description = f"{summary}. {detail}".strip(". ") + f". (REST: {method} {API_PREFIX}{path})"
        tools[name] = ToolSpec(
            name=name,
            method=method,
            path=path,
            description=description,
            input_schema={
                "type": "object",
                "properties": properties,
                "required": sorted(set(required)),
                "additionalProperties": False,
            },
            path_params=tuple(path_params),
            query_params=tuple(query_params),
            body_fields=tuple(body_fields),
            delimited=tuple(delimited),
        )
    return tools


class RegistryTools:
    """The tools over one REST client; a call answers JSON text, or raises ToolFailure."""

    def __init__(self, client: RegistryClient, spec: dict[str, Any]) -> None:
        self.client = client
        self.tools = build_tools(spec)

    @classmethod
    def connect(cls, url: str, token: str | None, timeout: float = 60.0) -> RegistryTools:
        client = RegistryClient(url, token, timeout=timeout)
        response = client.session.get(url.rstrip("/") + "/api/openapi.json", timeout=timeout)
        response.raise_for_status()
        return cls(client, response.json())

    def call(self, name: str, arguments: dict[str, Any]) -> Any:
        tool = self.tools.get(name)
        if tool is None:
            raise ToolFailure(f"no tool named {name!r}")
        unknown = sorted(set(arguments) - set(tool.input_schema["properties"]))
        missing = [p for p in tool.input_schema["required"] if p not in arguments]
        if unknown or missing:
            raise ToolFailure(f"{name}: unknown arguments {unknown}, missing {missing}")
        path = tool.path
        for param in tool.path_params:
            path = path.replace("{" + param + "}", _segment(arguments[param]))
        params = {
            k: ",".join(map(str, v)) if k in tool.delimited and isinstance(v, list) else v
            for k, v in arguments.items()
            if k in tool.query_params
        }
        body = {k: arguments[k] for k in tool.body_fields if k in arguments}
        headers = None
        if tool.method == "POST":
            # The client's own retry after a dropped connection is then the same call;
            # a second tool call is a second call.
            headers = {"Idempotency-Key": f"mcp-{uuid.uuid4().hex}"}
        try:
            return self.client.call(
                tool.method,
                path,
                params=params or None,
                json=body if tool.body_fields else None,
                headers=headers,
            )
        except ApiProblem as exc:
            raise ToolFailure(str(exc), exc.body) from exc
        except Unreachable as exc:
            raise ToolFailure(str(exc)) from exc


class ToolFailure(Exception):
    """What the assistant is told when a call is refused: the problem, verbatim."""

    def __init__(self, message: str, problem: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.problem = problem


def _segment(value: Any) -> str:
    return quote(str(value), safe="")


def build_server(tools: RegistryTools):
    """The MCP server (the SDK's low-level server: our schemas, not inferred ones)."""
    import mcp_types as types
    from mcp.server import Server

    async def list_tools(ctx, params) -> types.ListToolsResult:
        return types.ListToolsResult(
            tools=[
                types.Tool(
                    name=t.name,
                    description=t.description,
                    input_schema=t.input_schema,
                    annotations=types.ToolAnnotations(
                        read_only_hint=t.method == "GET",
                        destructive_hint=False,
                        idempotent_hint=t.method == "GET",
                        open_world_hint=False,
                    ),
                )
                for t in tools.tools.values()
            ]
        )

    async def call_tool(ctx, params) -> types.CallToolResult:
        import anyio

        try:
            result = await anyio.to_thread.run_sync(
                tools.call, params.name, dict(params.arguments or {})
            )
        except ToolFailure as exc:
            text = json.dumps(exc.problem) if exc.problem else str(exc)
            return types.CallToolResult(
                content=[types.TextContent(text=text)],
                structured_content=exc.problem,
                is_error=True,
            )
        structured = result if isinstance(result, dict) else {"result": result}
        return types.CallToolResult(
            content=[types.TextContent(text=json.dumps(result, default=str))],
            structured_content=structured,
        )

    return Server(
        "registry-service",
        instructions="Track, search and compare runs and models; register versions and "
        "request promotions. Approvals from agent tokens do not count toward a quorum.",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


def serve_stdio(tools: RegistryTools) -> None:
    import anyio
    from mcp.server.stdio import stdio_server

    server = build_server(tools)

    async def main() -> None:
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())

    anyio.run(main)


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_http(tools: RegistryTools, host: str, port: int) -> None:
    import uvicorn

    server = build_server(tools)
    uvicorn.run(server.streamable_http_app(host=host), host=host, port=port, log_level="warning")
