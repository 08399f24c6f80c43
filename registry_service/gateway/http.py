"""HTTP transport tuning for MLflow's REST client."""

from __future__ import annotations


def install_low_latency_transport() -> None:
    """Placeholder replaced below once measured."""
