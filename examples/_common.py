"""Shared by the examples: where the service is, and the data they train on."""

from __future__ import annotations

import argparse
import os

from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

from registry_service.sdk.client import RegistryClient


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--url",
        default=os.environ.get("REGISTRY_URL", "http://127.0.0.1:8080"),
        help="registry-service base URL (env REGISTRY_URL; `make run` serves port 8080)",
    )
    p.add_argument(
        "--token",
        default=os.environ.get("REGISTRY_TOKEN"),
        help="API token with the requester role (env REGISTRY_TOKEN)",
    )
    p.add_argument("--model", default="breast-cancer", help="registered model name")
    p.add_argument("--experiment", default="breast-cancer", help="tracking experiment name")
    return p


def client(args: argparse.Namespace) -> RegistryClient:
    if not args.token:
        raise SystemExit("a token is required: --token or REGISTRY_TOKEN")
    return RegistryClient(args.url, args.token)


def dataset(seed: int = 0):
    """A small tabular dataset bundled with scikit-learn: no download."""
    features, labels = load_breast_cancer(return_X_y=True)
    return train_test_split(features, labels, test_size=0.25, random_state=seed, stratify=labels)
