"""The client's wait, when the service is gone before its first poll."""

from __future__ import annotations

import pytest

from registry_service.sdk.client import RegistryClient, Unreachable
from tests.rig import free_port


def test_a_service_gone_before_the_first_poll_reports_the_status_from_the_request():
    client = RegistryClient(f"http://127.0.0.1:{free_port()}", "rs_x", retries=0)
    with pytest.raises(Unreachable) as caught:
        client.wait(99, timeout=0.3, interval=0.1, last={"id": 99, "status": "pending"})
    assert "request 99 was pending when last seen" in str(caught.value)
