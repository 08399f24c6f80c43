"""A small REST client of a running registry-service, for the CLI and CI jobs.

Networks drop connections: a kept-alive connection the server closed while idle, a
restart, a load balancer's reset. Calls that are safe to repeat (GET, and POSTs that
carry an ``Idempotency-Key``) are retried with exponential backoff and jitter; other
calls are never sent twice.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

import requests

log = logging.getLogger(__name__)

TERMINAL = {"executed", "rejected", "cancelled", "expired", "failed", "superseded"}
# Answers worth another try on a call safe to repeat: the service restarting, or a
# proxy in front of it that could not reach it.
RETRY_STATUSES = {502, 503, 504}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


@dataclass
class ApiProblem(Exception):
    """The service answered with an RFC 9457 problem."""

    status: int
    body: dict[str, Any]

    def __str__(self) -> str:
        code = self.body.get("code", "error")
        return f"{self.status} {code}: {self.body.get('detail') or self.body.get('title')}"


class Unreachable(Exception):
    """No answer from the service at all."""


def backoff(attempt: int, base: float = 0.5, cap: float = 8.0) -> float:
    """Seconds before retry ``attempt`` (0-based): exponential, capped, full jitter."""
    return random.uniform(0, min(cap, base * 2**attempt))


class RegistryClient:
    def __init__(
        self, url: str, token: str | None, timeout: float = 30.0, retries: int = 4
    ) -> None:
        self.base = url.rstrip("/") + "/api/v1"
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout
        self.retries = retries

    def call(
        self,
        method: str,
        path: str,
        *,
        params: dict | None = None,
        json: Any = None,
        headers: dict | None = None,
    ) -> Any:
        repeatable = method in SAFE_METHODS or "Idempotency-Key" in (headers or {})
        attempts = 1 + (self.retries if repeatable else 0)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = self.session.request(
                    method,
                    self.base + path,
                    params={k: v for k, v in (params or {}).items() if v is not None},
                    json=json,
                    headers=headers,
                    timeout=self.timeout,
                )
            except requests.RequestException as exc:
                # A read timeout may mean the call is still running: only a safe
                # method is sent again; a keyed POST would only meet itself in flight.
                retry = isinstance(exc, requests.ConnectionError) or method in SAFE_METHODS
                if last or not retry:
                    raise Unreachable(f"no answer from {self.base}: {exc}") from exc
                log.warning("%s %s: %s; retrying", method, path, exc)
                time.sleep(backoff(attempt))
                continue
            if response.status_code in RETRY_STATUSES and not last:
                log.warning("%s %s: answered %s; retrying", method, path, response.status_code)
                time.sleep(_retry_after(response) or backoff(attempt))
                continue
            return _body(response)
        raise AssertionError("unreachable: the last attempt returns or raises")

    # -- reads
    def models(self, prefix: str | None = None, limit: int = 100) -> list[dict]:
        return self.call("GET", "/models", params={"name_prefix": prefix, "max_results": limit})[
            "models"
        ]

    def model(self, name: str) -> dict:
        return self.call("GET", f"/models/{name}")

    def versions(self, name: str, stage: str | None = None, limit: int = 100) -> list[dict]:
        return self.call(
            "GET", f"/models/{name}/versions", params={"stage": stage, "max_results": limit}
        )["versions"]

    def monitoring(
        self, name: str, version: int | None = None, since: str = "1h", until: str = "now"
    ) -> dict:
        return self.call(
            "GET",
            f"/models/{name}/monitoring",
            params={"version": version, "since": since, "until": until},
        )

    def ab_test(self, name: str, test_id: int) -> dict:
        return self.call("GET", f"/models/{name}/ab-tests/{test_id}")

    def manifest(self, name: str, version: int) -> dict:
        """A version's signed manifest, with the registry's public key."""
        return self.call("GET", f"/models/{name}/versions/{version}/manifest")

    def promotion(self, request_id: int) -> dict:
        return self.call("GET", f"/promotions/{request_id}")

    def audit(self, model: str | None = None, limit: int = 20) -> list[dict]:
        return self.call("GET", "/audit", params={"model": model, "max_results": limit})["events"]

    def verify(self, interval: float = 1.0) -> dict:
        """Verify the whole chain as a background job and wait for its result: a long
        chain takes longer than one request may last."""
        job = self.call("POST", "/audit/verifications", json={})
        while job["status"] == "running":
            time.sleep(interval)
            job = self.call("GET", f"/audit/verifications/{job['id']}")
        if job["status"] != "done":
            raise ApiProblem(
                500,
                {
                    "code": f"verification-{job['status']}",
                    "detail": job.get("error") or "the process running it stopped",
                },
            )
        return job["result"]

    def experiments(self, prefix: str | None = None, limit: int = 100) -> list[dict]:
        return self.call(
            "GET", "/experiments", params={"name_prefix": prefix, "max_results": limit}
        )["experiments"]

    def experiment_id(self, name_or_id: str) -> str:
        """An experiment's id, given its exact name or, failing that, the id itself."""
        named = self.call("GET", "/experiments", params={"name": name_or_id})["experiments"]
        if named:
            return named[0]["experiment_id"]
        if name_or_id.isdigit():
            return self.call("GET", f"/experiments/{name_or_id}")["experiment_id"]
        raise ApiProblem(
            404,
            {
                "code": "experiment-not-found",
                "title": "Experiment not found",
                "detail": f"no active experiment named {name_or_id!r}",
            },
        )

    def compare_runs(self, run_ids: list[str], metrics: list[str] | None = None) -> dict:
        return self.call(
            "GET",
            "/runs/compare",
            params={"run_ids": ",".join(run_ids), "metrics": ",".join(metrics or []) or None},
        )

    def best_run(
        self,
        experiment_id: str,
        metric: str,
        higher_is_better: bool = True,
        filter: str | None = None,
    ) -> dict:
        return self.call(
            "GET",
            f"/experiments/{experiment_id}/best-run",
            params={
                "metric": metric,
                "order": "desc" if higher_is_better else "asc",
                "filter": filter,
            },
        )

    # -- registration
    def ensure_model(self, name: str, description: str | None = None) -> dict:
        """The registered model ``name``, created if it does not exist yet."""
        try:
            return self.model(name)
        except ApiProblem as exc:
            if exc.status != 404:
                raise
        body = {"name": name, "description": description} if description else {"name": name}
        try:
            return self.call("POST", "/models", json=body)
        except ApiProblem as exc:
            if exc.status != 409:  # created meanwhile by another job
                raise
            return self.model(name)

    def register_version(
        self,
        name: str,
        run_id: str,
        artifact_path: str = "model",
        description: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> dict:
        """Register the model ``artifact_path`` logged by ``run_id``; lineage is recorded."""
        body: dict[str, Any] = {"run_id": run_id, "artifact_path": artifact_path}
        if description:
            body["description"] = description
        if tags:
            body["tags"] = tags
        return self.call("POST", f"/models/{name}/versions", json=body)

    # -- workflow
    def request_promotion(
        self,
        name: str,
        version: int,
        reason: str,
        stage: str | None = None,
        alias: str | None = None,
        archive_existing: bool = True,
        idempotency_key: str | None = None,
    ) -> dict:
        body: dict[str, Any] = {
            "model_name": name,
            "version": version,
            "reason": reason,
            "archive_existing_versions": archive_existing,
        }
        body["target_stage" if stage else "target_alias"] = stage or alias
        # Generated once per call: a retried CI step passes its own to stay idempotent.
        key = idempotency_key or f"cli-{uuid.uuid4()}"
        return self.call("POST", "/promotions", json=body, headers={"Idempotency-Key": key})

    def review(self, request_id: int, verb: str, comment: str | None = None) -> dict:
        body = {"comment": comment} if comment else {}
        return self.call("POST", f"/promotions/{request_id}/{verb}", json=body)

    def rollback(
        self, name: str, reason: str, stage: str | None = None, alias: str | None = None
    ) -> dict:
        body = {"reason": reason, ("target_stage" if stage else "target_alias"): stage or alias}
        return self.call("POST", f"/models/{name}/rollback", json=body)

    def evaluate(self, name: str, version: int, dry_run: bool = False) -> dict:
        return self.call(
            "POST", f"/models/{name}/versions/{version}/evaluate", json={"dry_run": dry_run}
        )

    def wait(
        self, request_id: int, timeout: float, interval: float = 2.0, last: dict | None = None
    ) -> dict:
        """Poll until the request ends or ``timeout`` seconds pass; the last state.

        A service that restarts or is briefly unreachable meanwhile is waited for, up to
        the same deadline; if it is still unreachable then, ``Unreachable`` is raised,
        naming the status last seen (``last``: the state already in hand, e.g. the
        answer that created the request, for a service gone before the first poll).
        """
        deadline = time.monotonic() + timeout
        state = last
        while True:
            try:
                state = self.promotion(request_id)
            except (Unreachable, ApiProblem) as exc:
                if isinstance(exc, ApiProblem) and exc.status < 500:
                    raise
                if time.monotonic() >= deadline:
                    if isinstance(exc, ApiProblem) or state is None:
                        raise
                    raise Unreachable(
                        f"{exc}; request {request_id} was {state['status']} when last seen"
                    ) from exc
                log.warning("waiting for the service: %s", exc)
            else:
                if state["status"] in TERMINAL or time.monotonic() >= deadline:
                    return state
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return min(float(value), 30.0) if value.isdigit() else None


def _body(response: requests.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = {"detail": response.text[:500], "title": response.reason}
    if response.status_code >= 400:
        raise ApiProblem(response.status_code, body)
    return body
