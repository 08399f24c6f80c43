"""`registry-service mcp` over stdio, driven by the MCP SDK's own client against the
service over HTTP (PostgreSQL, a real `mlflow server`): every tool is listed with the
REST API's own schema and called, and an agent's approval is refused."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from registry_service.sdk.mcp_tools import OPERATIONS
from registry_service.services.context import Context
from tests.conftest import get_services_of
from tests.rig import free_port

CTX = Context(actor="test-setup")


@pytest.fixture
def agent_token(app):
    secret, info = get_services_of(app).tokens.create(
        CTX, f"assistant-{uuid.uuid4().hex[:6]}", ["requester", "approver"], kind="agent"
    )
    return secret, info.principal


def run_session(live_url, token, script):
    params = StdioServerParameters(
        command=str(Path(sys.executable).parent / "registry-service"),
        args=["mcp"],
        env={"REGISTRY_URL": live_url, "REGISTRY_TOKEN": token},
    )

    async def main():
        async with Client(params, read_timeout_seconds=120) as client:
            return await script(client)

    return asyncio.run(main())


def test_every_tool_over_stdio_with_an_agent_token(
    app, client, auth, live_url, agent_token, model_name, make_run
):
    token, agent = agent_token
    run_ids = [make_run(metrics={"auc": auc}, params={"depth": "6"}) for auc in (0.81, 0.86)]
    experiment_id = get_services_of(app).gateway.get_run(run_ids[0]).experiment_id
    spec = client.get("/api/openapi.json").json
    calls: dict[str, dict] = {}

    async def script(session):
        listed = {t.name: t for t in (await session.list_tools()).tools}

        async def call(tool, **arguments):
            result = await session.call_tool(tool, arguments)
            calls[tool] = {"error": result.is_error, "data": result.structured_content}
            return result

        await call("whoami")
        await call("search_experiments", name="registry-tests")
        await call("search_runs", experiment_id=experiment_id, filter="metrics.auc > 0.8")
        await call("best_run", experiment_id=experiment_id, metric="auc")
        await call("get_run", run_id=run_ids[1])
        await call("compare_runs", run_ids=run_ids)
        await call("create_model", name=model_name, description="made by an assistant")
        policy = client.put(
            f"/api/v1/models/{model_name}/policy",
            headers=auth("admin"),
            json={"rules": [], "auto_promotion": {"metric": "auc", "min_value": 0.5}},
        )
        assert policy.status_code == 200, policy.json
        await call("register_version", name=model_name, run_id=run_ids[0])
        await call("register_version", name=model_name, run_id=run_ids[1])
        await call("list_models", name_prefix=model_name)
        await call("show_model", name=model_name)
        await call("list_versions", name=model_name)
        await call("compare_versions", name=model_name, versions=[1, 2])
        await call("evaluate_version", name=model_name, version=2, dry_run=True)
        opened = await call(
            "request_promotion",
            model_name=model_name,
            version=2,
            target_stage="Staging",
            reason="higher auc (asked by an assistant)",
        )
        assert not opened.is_error, {n: c for n, c in calls.items() if c["error"]}
        request_id = opened.structured_content["id"]
        await call("promotion_status", request_id=request_id)
        # A person's request: the agent may read it, but its approval cannot count.
        human = client.post(
            "/api/v1/promotions",
            headers=auth("requester"),
            json={"model_name": model_name, "version": 1, "target_alias": "shadow", "reason": "r"},
        )
        assert human.status_code == 201, human.json
        await call("approve_promotion", request_id=human.json["id"], comment="looks fine to me")
        await call("model_history", name=model_name)
        await call("audit_tail", model=model_name, max_results=5)
        await call("monitoring", name=model_name)
        await call("drift", name=model_name)
        bad = await session.call_tool("show_model", {"name": "no such\u0000model"})
        return listed, request_id, bad

    listed, request_id, bad = run_session(live_url, token, script)

    # Listed with the REST API's own descriptions and input schemas.
    assert set(listed) == {name for name, _, _ in OPERATIONS}
    request = listed["request_promotion"]
    body = spec["components"]["schemas"]["PromotionCreate"]
    assert request.input_schema["properties"]["reason"] == body["properties"]["reason"]
    assert set(request.input_schema["required"]) == {"model_name", "version", "reason"}
    assert request.description.startswith(spec["paths"]["/api/v1/promotions"]["post"]["summary"])
    assert listed["show_model"].annotations.read_only_hint is True
    assert listed["request_promotion"].annotations.read_only_hint is False

    # Every tool was called and answered; only the agent's approval was refused.
    assert set(calls) == set(listed)
    refused = {name for name, c in calls.items() if c["error"]}
    assert refused == {"approve_promotion"}, {n: calls[n] for n in refused}
    assert calls["approve_promotion"]["data"]["code"] == "not-eligible"
    assert "agent token" in calls["approve_promotion"]["data"]["detail"]
    assert calls["whoami"]["data"]["kind"] == "agent"
    assert calls["best_run"]["data"]["metrics"]["auc"] >= 0.86  # the experiment is shared
    assert calls["request_promotion"]["data"]["requester"] == agent
    assert calls["promotion_status"]["data"]["approvals"] == []
    assert [v["version"] for v in calls["list_versions"]["data"]["versions"]] == [2, 1]
    # What the agent did is in the audit log under its own name, nothing more.
    events = client.get(
        "/api/v1/audit",
        headers={"Authorization": f"Bearer {token}"},
        query_string={"subject": f"promotion:{request_id}"},
    ).json["events"]
    assert [e["action"] for e in events] == ["promotion.requested"]
    assert events[0]["actor"] == agent
    # A bad argument is the REST API's own problem, handed back to the assistant.
    assert bad.is_error and json.loads(bad.content[0].text)["status"] in (400, 404, 422)


def test_streamable_http_transport(live_url, agent_token):
    token, agent = agent_token
    port = free_port()
    env = {**os.environ, "REGISTRY_URL": live_url, "REGISTRY_TOKEN": token}
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "registry-service"),
            "mcp",
            "--http",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, process.stderr.read().decode()
                assert time.monotonic() < deadline, "the MCP HTTP server did not listen"
                time.sleep(0.2)

        async def main():
            async with Client(f"http://127.0.0.1:{port}/mcp") as session:
                tools = (await session.list_tools()).tools
                who = await session.call_tool("whoami", {})
                return tools, who

        tools, who = asyncio.run(main())
        assert {t.name for t in tools} == {name for name, _, _ in OPERATIONS}
        assert not who.is_error and who.structured_content["name"] == agent
    finally:
        process.terminate()
        process.wait(30)
