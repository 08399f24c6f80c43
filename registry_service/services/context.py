"""Who is acting, carried from the request into the service layer."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Context:
    actor: str
    request_id: str | None = None  # minted by the service for every request
    client_request_id: str | None = None  # the caller's X-Request-ID, for correlation only
