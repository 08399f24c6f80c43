"""The registry-service command on the embedded default."""

import json

import pytest
from click.testing import CliRunner

from registry_service.cli import main


@pytest.fixture
def runner(tmp_path, monkeypatch):
    monkeypatch.setenv("REGISTRY_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("REGISTRY_DATABASE_URL", raising=False)
    runner = CliRunner()
    assert runner.invoke(main, ["db", "upgrade"]).exit_code == 0
    return runner


def test_tokens_create_list_revoke(runner):
    created = runner.invoke(
        main, ["tokens", "create", "--name", "release-approver", "--role", "approver", "--json"]
    )
    assert created.exit_code == 0, created.output
    token = json.loads(created.output)
    assert token["roles"] == ["approver"] and token["token"].startswith("rs_")

    listed = runner.invoke(main, ["tokens", "list"])
    assert "release-approver" in listed.output and token["token"] not in listed.output

    revoked = runner.invoke(main, ["tokens", "revoke", str(token["id"])])
    assert revoked.exit_code == 0
    assert "release-approver" not in runner.invoke(main, ["tokens", "list"]).output
    assert "revoked" in runner.invoke(main, ["tokens", "list", "--all"]).output


def test_unknown_role_and_bad_name_exit_non_zero(runner):
    assert runner.invoke(main, ["tokens", "create", "--name", "x", "--role", "god"]).exit_code == 2
    bad = runner.invoke(main, ["tokens", "create", "--name", "Bad Name", "--role", "viewer"])
    assert bad.exit_code == 1 and "invalid principal name" in bad.output


def test_revoking_missing_token_fails(runner):
    result = runner.invoke(main, ["tokens", "revoke", "42"])
    assert result.exit_code == 1 and "no token with id 42" in result.output


def test_bootstrap_prints_a_token_once(runner):
    first = runner.invoke(main, ["tokens", "bootstrap"])
    assert first.exit_code == 0 and "rs_" in first.output
    second = runner.invoke(main, ["tokens", "bootstrap"])
    assert second.exit_code == 0 and "rs_" not in second.output
