"""Webhooks: who hears about which audit events, and the delivery of what is owed.

Deliveries follow the Standard Webhooks specification: a ``webhook-id`` that stays the
same across attempts, a ``webhook-timestamp`` and an HMAC-SHA256 ``webhook-signature``,
so receivers verify them with the ``standardwebhooks`` library. Delivery is at least
once: the outbox row is committed with the event, and only a 2xx answer settles it.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import random
import re
import secrets
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, func, select, update
from standardwebhooks.webhooks import Webhook as Signer

from registry_service.db.base import utcnow
from registry_service.db.database import Database
from registry_service.db.models import (
    AuditEventRow,
    PromotionRequestRow,
    WebhookDeliveryRow,
    WebhookRow,
)
from registry_service.domain.entities import Page
from registry_service.domain.paging import decode_position, encode_token
from registry_service.errors import (
    DeliveryNotFound,
    ValidationError,
    WebhookNotFound,
    WebhookTargetRefused,
)
from registry_service.integrations import egress
from registry_service.integrations.outbox import DELIVERED, FAILED, PENDING
from registry_service.integrations.payloads import render
from registry_service.services.audit import AuditLog
from registry_service.services.context import Context

log = logging.getLogger(__name__)

FORMATS = ("standard", "slack")
EVENT_PATTERN_RE = re.compile(r"^[a-z*][a-z0-9_.*]{0,63}$")
MAX_PATTERNS = 50
SECRET_PREFIX = "whsec_"
ATTEMPT_LOG_SIZE = 10
BATCH = 100
SENDERS = 8
USER_AGENT = "registry-service-webhooks/1"


@dataclass(frozen=True)
class Webhook:
    id: int
    url: str
    events: list[str]
    format: str
    description: str | None
    enabled: bool
    disabled_reason: str | None
    created_at: datetime
    created_by: str
    updated_at: datetime
    last_success_at: datetime | None
    pending_deliveries: int = 0


@dataclass(frozen=True)
class Delivery:
    id: int
    webhook_id: int
    event_seq: int
    event_type: str
    message_id: str
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    attempt_log: list[dict[str, Any]]


@dataclass(frozen=True)
class Outcome:
    """What one attempt got back: a status code, or the error that stood in for one."""

    delivery_id: int
    status_code: int | None
    error: str | None
    duration_ms: float

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _webhook(row: WebhookRow, pending: int = 0) -> Webhook:
    return Webhook(
        id=row.id,
        url=row.url,
        events=list(row.events),
        format=row.format,
        description=row.description,
        enabled=row.enabled,
        disabled_reason=row.disabled_reason,
        created_at=row.created_at,
        created_by=row.created_by,
        updated_at=row.updated_at,
        last_success_at=row.last_success_at,
        pending_deliveries=pending,
    )


def _delivery(row: WebhookDeliveryRow) -> Delivery:
    return Delivery(
        id=row.id,
        webhook_id=row.webhook_id,
        event_seq=row.event_seq,
        event_type=row.event_type,
        message_id=row.message_id,
        status=row.status,
        attempts=row.attempts,
        created_at=row.created_at,
        next_attempt_at=row.next_attempt_at,
        last_attempt_at=row.last_attempt_at,
        delivered_at=row.delivered_at,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        attempt_log=list(row.attempt_log or []),
    )


def _invalid(field: str, message: str) -> ValidationError:
    return ValidationError(
        f"{field}: {message}", errors=[{"field": field, "location": "json", "message": message}]
    )


def check_url(url: str) -> str:
    """The URL's form only; where it points is checked by ``check_target``."""
    try:
        egress.Target.parse(url)
    except ValueError as exc:
        raise _invalid("url", str(exc)) from None
    parts = urlsplit(url)
    if parts.username or parts.password:
        raise _invalid("url", "no credentials in the URL; receivers verify the signature")
    return url


def check_target(url: str, allowed: Iterable[egress.Network]) -> str:
    """Refuse a URL whose host is, or resolves to, an address webhooks never call. A
    name that does not resolve yet is accepted: every delivery checks again."""
    try:
        egress.checked(egress.Target.parse(url), allowed)
    except WebhookTargetRefused as exc:
        error = {"field": "url", "location": "json", "message": exc.detail}
        raise WebhookTargetRefused(exc.detail, errors=[error]) from None
    except OSError:
        pass
    return url


def redact_url(url: str) -> str:
    """A webhook URL as the audit log and non-admins see it: scheme, host and port, and
    a fingerprint of the whole URL; never its path, query or user (a Slack webhook's path
    is its secret)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        port = ""
    shown = f"[{host}]" if ":" in host else host
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:8]
    return f"{parts.scheme}://{shown}{port}/…#sha256:{digest}"


def check_events(events: list[str]) -> list[str]:
    if not events or len(events) > MAX_PATTERNS:
        raise _invalid("events", f"1 to {MAX_PATTERNS} event names or patterns")
    for pattern in events:
        if not EVENT_PATTERN_RE.match(pattern):
            raise _invalid(
                "events",
                f"{pattern!r}: an event name such as promotion.requested, or a "
                "pattern such as promotion.* or *",
            )
    return sorted(set(events))


def check_format(format: str) -> str:
    if format not in FORMATS:
        raise _invalid("format", f"one of {FORMATS}")
    return format


def check_secret(secret: str | None) -> str:
    """A ``whsec_`` secret of 24 to 64 random bytes in base64; made up when not given."""
    if secret is None:
        return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(raw, validate=True)
    except ValueError:
        key = b""
    if not secret.startswith(SECRET_PREFIX) or not 24 <= len(key) <= 64:
        raise _invalid("secret", "whsec_ followed by 24 to 64 bytes in base64 (or leave it out)")
    return secret


def backoff(attempts: int, base: float, cap: float = 3600.0) -> float:
    """Seconds before the next attempt: doubling from ``base`` up to an hour, with
    jitter so that a receiver coming back is not hit by every retry at once."""
    return min(base * 2 ** min(attempts - 1, 30), cap) * random.uniform(0.8, 1.2)


class WebhookService:
    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        *,
        public_url: str,
        retry_seconds: float = 5.0,
        give_up_after: timedelta = timedelta(days=1),
        timeout: float = 10.0,
        allow_networks: Iterable[str] = (),
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.audit = audit
        self.public_url = public_url.rstrip("/")
        self.retry_seconds = retry_seconds
        self.give_up_after = give_up_after
        self.timeout = timeout
        # Internal networks deliveries may reach (REGISTRY_WEBHOOK_ALLOW_NETWORKS).
        self.allowed = egress.parse_networks(allow_networks)
        self.clock = clock

    # -- administration (audited; secrets never enter the audit log)
    def create(
        self,
        ctx: Context,
        url: str,
        events: list[str],
        format: str = "standard",
        secret: str | None = None,
        description: str | None = None,
    ) -> tuple[Webhook, str]:
        """Register a webhook; its secret is returned here and never shown again."""
        row = WebhookRow(
            url=check_target(check_url(url), self.allowed),
            events=check_events(events),
            format=check_format(format),
            secret=check_secret(secret),
            description=description,
            enabled=True,
            created_by=ctx.actor,
            created_at=self.clock(),
            updated_at=self.clock(),
        )
        with self.db.transaction() as session:
            session.add(row)
            session.flush()
            self.audit.append(
                session, ctx, "webhook.created", subject=f"webhook:{row.id}", after=_public(row)
            )
            return _webhook(row), row.secret

    def list(self) -> list[Webhook]:
        with self.db.read() as session:
            pending = self._pending_counts(session)
            rows = session.execute(select(WebhookRow).order_by(WebhookRow.id)).scalars()
            return [_webhook(r, pending.get(r.id, 0)) for r in rows]

    def get(self, webhook_id: int) -> Webhook:
        with self.db.read() as session:
            return _webhook(self._row(session, webhook_id), self._pending(session, webhook_id))

    def update(self, ctx: Context, webhook_id: int, changes: dict[str, Any]) -> Webhook:
        """Change url, events, format, description or enabled; re-enabling clears the
        reason it was disabled and resumes its pending deliveries."""
        with self.db.transaction() as session:
            row = self._row(session, webhook_id, lock=True)
            before = _public(row)
            if "url" in changes:
                row.url = check_target(check_url(changes["url"]), self.allowed)
            if "events" in changes:
                row.events = check_events(changes["events"])
            if "format" in changes:
                row.format = check_format(changes["format"])
            if "description" in changes:
                row.description = changes["description"]
            if "enabled" in changes and changes["enabled"] != row.enabled:
                row.enabled = changes["enabled"]
                row.disabled_reason = None if row.enabled else f"disabled by {ctx.actor}"
                if row.enabled:
                    # What waited gets a fresh day of retries, starting now.
                    session.execute(
                        update(WebhookDeliveryRow)
                        .where(
                            WebhookDeliveryRow.webhook_id == row.id,
                            WebhookDeliveryRow.status == PENDING,
                        )
                        .values(created_at=self.clock(), next_attempt_at=self.clock())
                    )
            after = _public(row)
            if after != before:
                row.updated_at = self.clock()
                self.audit.append(
                    session,
                    ctx,
                    "webhook.updated",
                    subject=f"webhook:{row.id}",
                    before=before,
                    after=after,
                )
            return _webhook(row, self._pending(session, webhook_id))

    def delete(self, ctx: Context, webhook_id: int) -> None:
        """Remove a webhook with its delivery log; what it was still owed is dropped."""
        with self.db.transaction() as session:
            row = self._row(session, webhook_id, lock=True)
            before = _public(row)
            session.execute(
                delete(WebhookDeliveryRow).where(WebhookDeliveryRow.webhook_id == webhook_id)
            )
            session.delete(row)
            self.audit.append(
                session, ctx, "webhook.deleted", subject=f"webhook:{webhook_id}", before=before
            )

    def deliveries(
        self, webhook_id: int, status: str | None, max_results: int, page_token: str | None
    ) -> Page[Delivery]:
        """A webhook's deliveries, newest first."""
        before = decode_position(page_token, 2**63 - 1)
        with self.db.read() as session:
            self._row(session, webhook_id)
            stmt = select(WebhookDeliveryRow).where(WebhookDeliveryRow.webhook_id == webhook_id)
            if status is not None:
                stmt = stmt.where(WebhookDeliveryRow.status == status)
            if before is not None:
                stmt = stmt.where(WebhookDeliveryRow.id < before)
            rows = list(
                session.execute(
                    stmt.order_by(WebhookDeliveryRow.id.desc()).limit(max_results + 1)
                ).scalars()
            )
        more = len(rows) > max_results
        rows = rows[:max_results]
        token = encode_token({"before": rows[-1].id}) if more and rows else None
        return Page([_delivery(r) for r in rows], token)

    def redeliver(self, ctx: Context, webhook_id: int, delivery_id: int) -> Delivery:
        """Send a delivery again soon, with the same webhook-id (receivers can tell it
        is a repeat); one that was given up on is owed again."""
        with self.db.transaction() as session:
            self._row(session, webhook_id)
            row = session.get(WebhookDeliveryRow, delivery_id, with_for_update=True)
            if row is None or row.webhook_id != webhook_id:
                raise DeliveryNotFound(f"webhook {webhook_id} has no delivery {delivery_id}")
            previous = row.status
            row.status, row.next_attempt_at = PENDING, self.clock()
            # A fresh day of retries: the give-up clock starts from the redelivery.
            row.created_at = self.clock()
            self.audit.append(
                session,
                ctx,
                "webhook.redelivery_requested",
                subject=f"webhook:{webhook_id}",
                after={
                    "delivery_id": row.id,
                    "event_seq": row.event_seq,
                    "previous_status": previous,
                },
            )
            return _delivery(row)

    def purge(self, older_than: timedelta) -> int:
        """Forget settled deliveries older than ``older_than``; pending ones stay."""
        cutoff = self.clock() - older_than
        with self.db.transaction() as session:
            result = session.execute(
                delete(WebhookDeliveryRow).where(
                    WebhookDeliveryRow.status != PENDING,
                    WebhookDeliveryRow.created_at < cutoff,
                )
            )
            return result.rowcount or 0

    # -- delivery (the scheduler's job)
    def deliver_due(self, ctx: Context) -> dict[str, int]:
        """Attempt every delivery that is due, a batch at a time, several at once."""
        totals = {"delivered": 0, "failed_attempts": 0, "given_up": 0, "disabled": 0}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            batch = self._due_batch()
            if not batch:
                break
            with ThreadPoolExecutor(max_workers=min(SENDERS, len(batch))) as pool:
                outcomes = list(pool.map(self._send, batch))
            for outcome in outcomes:
                try:
                    settled = self._settle(ctx, outcome)
                except Exception:  # one delivery's record must not hold up the others
                    log.exception("webhook delivery %s not recorded", outcome.delivery_id)
                    continue
                for key, n in settled.items():
                    totals[key] += n
            if len(batch) < BATCH:
                break
        return totals

    def _due_batch(self) -> list[dict[str, Any]]:
        now = self.clock()
        with self.db.read() as session:
            rows = session.execute(
                select(WebhookDeliveryRow, WebhookRow)
                .join(WebhookRow, WebhookRow.id == WebhookDeliveryRow.webhook_id)
                .where(
                    WebhookDeliveryRow.status == PENDING,
                    WebhookDeliveryRow.next_attempt_at <= now,
                    WebhookRow.enabled.is_(True),
                )
                .order_by(WebhookDeliveryRow.next_attempt_at, WebhookDeliveryRow.id)
                .limit(BATCH)
            ).all()
            if not rows:
                return []
            seqs = {d.event_seq for d, _ in rows}
            events = {
                e.seq: e
                for e in session.execute(
                    select(AuditEventRow).where(AuditEventRow.seq.in_(seqs))
                ).scalars()
            }
            requests_by_id = self._promotions(session, events.values())
            batch = []
            for delivery, hook in rows:
                event = events.get(delivery.event_seq)
                body = (
                    render(event, hook.format, self.public_url, requests_by_id)
                    if event is not None
                    else None
                )
                batch.append(
                    {
                        "id": delivery.id,
                        "message_id": delivery.message_id,
                        "url": hook.url,
                        "secret": hook.secret,
                        "body": body,
                    }
                )
            return batch

    @staticmethod
    def _promotions(session, events) -> dict[int, PromotionRequestRow]:
        ids = set()
        for e in events:
            if e.subject and e.subject.startswith("promotion:"):
                ids.add(int(e.subject.split(":", 1)[1]))
        if not ids:
            return {}
        rows = session.execute(
            select(PromotionRequestRow).where(PromotionRequestRow.id.in_(ids))
        ).scalars()
        return {r.id: r for r in rows}

    def _send(self, item: dict[str, Any]) -> Outcome:
        began = time.perf_counter()
        if item["body"] is None:
            return Outcome(item["id"], None, "the audit event is gone", 0.0)
        moment = self.clock()
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": item["message_id"],
            "webhook-timestamp": str(int(moment.timestamp())),
            "webhook-signature": Signer(item["secret"]).sign(
                item["message_id"], moment, item["body"]
            ),
        }
        try:
            # Checked again here, and sent to the very address checked (egress.py).
            answer = egress.post(
                item["url"],
                item["body"].encode("utf-8"),
                headers,
                allowed=self.allowed,
                timeout=self.timeout,
            )
            code, error = answer.status, answer.error
            if code is not None and not 200 <= code < 300 and error is None:
                error = f"HTTP {code}: {answer.head.decode('utf-8', 'replace')}"
        except WebhookTargetRefused as exc:  # nothing was sent
            code, error = None, f"refused: {exc.detail}"
        except Exception as exc:  # a bug in one send must not lose the batch's others
            log.exception("webhook delivery %s failed to send", item["id"])
            code, error = None, f"{type(exc).__name__}: {str(exc)[:300]}"
        return Outcome(item["id"], code, error, (time.perf_counter() - began) * 1000)

    def _settle(self, ctx: Context, outcome: Outcome) -> dict[str, int]:
        now = self.clock()
        with self.db.transaction() as session:
            webhook_id = session.execute(
                select(WebhookDeliveryRow.webhook_id).where(
                    WebhookDeliveryRow.id == outcome.delivery_id
                )
            ).scalar()
            if webhook_id is None:
                return {}  # deleted with its webhook
            # Webhook first, then delivery: the order delete() locks them in.
            hook = session.get(WebhookRow, webhook_id, with_for_update=True)
            row = session.get(WebhookDeliveryRow, outcome.delivery_id, with_for_update=True)
            if hook is None or row is None or row.status != PENDING:
                return {}  # deleted, or settled by someone else meanwhile
            row.attempts += 1
            row.last_attempt_at = now
            row.last_status_code = outcome.status_code
            row.last_error = outcome.error[:500] if outcome.error else None
            entry = {
                "at": now.isoformat(),
                "status_code": outcome.status_code,
                "error": row.last_error,
                "duration_ms": round(outcome.duration_ms, 1),
            }
            row.attempt_log = [*(row.attempt_log or []), entry][-ATTEMPT_LOG_SIZE:]
            if outcome.ok:
                row.status, row.delivered_at, row.next_attempt_at = DELIVERED, now, None
                hook.last_success_at = now
                return {"delivered": 1}
            if now - row.created_at < self.give_up_after:
                row.next_attempt_at = now + timedelta(
                    seconds=backoff(row.attempts, self.retry_seconds)
                )
                return {"failed_attempts": 1}
            row.status, row.next_attempt_at = FAILED, None
            counts = {"failed_attempts": 1, "given_up": 1}
            # Disabled only when nothing at all got through while this one was retried:
            # a receiver that answers some deliveries is flaky, not gone.
            if hook.enabled and (
                hook.last_success_at is None or hook.last_success_at < row.created_at
            ):
                before = _public(hook)
                hook.enabled = False
                reason = f"no delivery succeeded for {self.give_up_after}; last: "
                hook.disabled_reason = f"{reason}{row.last_error}"[:500]
                hook.updated_at = now
                self.audit.append(
                    session,
                    ctx,
                    "webhook.disabled",
                    subject=f"webhook:{hook.id}",
                    before=before,
                    # The receiver's answer stays out of the audit log: it may echo the URL.
                    after={**_public(hook), "reason": reason + _failure_kind(row)},
                )
                counts["disabled"] = 1
            return counts

    # -- helpers
    def _row(self, session, webhook_id: int, lock: bool = False) -> WebhookRow:
        row = session.get(WebhookRow, webhook_id, with_for_update=lock)
        if row is None:
            raise WebhookNotFound(f"no webhook with id {webhook_id}")
        return row

    @staticmethod
    def _pending(session, webhook_id: int) -> int:
        return session.execute(
            select(func.count()).where(
                WebhookDeliveryRow.webhook_id == webhook_id, WebhookDeliveryRow.status == PENDING
            )
        ).scalar()

    @staticmethod
    def _pending_counts(session) -> dict[int, int]:
        return dict(
            session.execute(
                select(WebhookDeliveryRow.webhook_id, func.count())
                .where(WebhookDeliveryRow.status == PENDING)
                .group_by(WebhookDeliveryRow.webhook_id)
            ).all()
        )


def _failure_kind(row: WebhookDeliveryRow) -> str:
    """A failed attempt as the audit log names it: its status code, or the error's kind
    ("ConnectionError", "refused"), never the receiver's words."""
    if row.last_status_code is not None:
        return f"HTTP {row.last_status_code}"
    return (row.last_error or "").split(":", 1)[0] or "unknown"


def _public(row: WebhookRow) -> dict[str, Any]:
    """A webhook as the audit log shows it: the URL redacted, never the secret."""
    return {
        "url": redact_url(row.url),
        "events": list(row.events),
        "format": row.format,
        "description": row.description,
        "enabled": row.enabled,
    }
