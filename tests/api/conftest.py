"""Fixtures of the REST tests: the app served over real HTTP, and the CLI against it."""

from __future__ import annotations

import threading

import pytest
from click.testing import CliRunner
from werkzeug.serving import make_server

from registry_service.cli import main


@pytest.fixture
def live_url(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def cli(live_url, identities):
    runner = CliRunner()

    def run(*args, role="viewer"):
        env = {"REGISTRY_URL": live_url, "REGISTRY_TOKEN": identities[role]["token"]}
        return runner.invoke(main, list(args), env=env, catch_exceptions=False)

    return run
