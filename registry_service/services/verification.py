"""Verifications of the audit chain that outlive one HTTP request.

A long chain takes longer to recompute than a request may last (gunicorn's worker
timeout, a proxy's), so a verification can run as a job: started, polled by id, its
result kept. The job runs in a thread of the process that started it; a heartbeat shows
it alive, and a job whose heartbeat stopped (the process died) reads as interrupted.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from registry_service.db.base import utcnow
from registry_service.db.database import Database
from registry_service.db.models import AuditVerificationRow
from registry_service.errors import NotFound
from registry_service.services.audit import AuditLog
from registry_service.services.context import Context

log = logging.getLogger(__name__)

HEARTBEAT = timedelta(seconds=5)
# No heartbeat for this long: the process running the job is gone.
STALE_AFTER = timedelta(seconds=60)


class VerificationNotFound(NotFound):
    code = "verification-not-found"
    title = "Verification not found"


@dataclass(frozen=True)
class VerificationJob:
    id: int
    status: str  # running, done, failed, interrupted
    requested_by: str
    after_seq: int
    head_seq: int
    events_to_check: int
    started_at: datetime
    finished_at: datetime | None
    elapsed_seconds: float
    result: dict[str, Any] | None
    error: str | None


def _job(row: AuditVerificationRow, now: datetime) -> VerificationJob:
    status = row.status
    if status == "running" and now - row.heartbeat_at > STALE_AFTER:
        status = "interrupted"
    end = row.finished_at or (now if status == "running" else row.heartbeat_at)
    return VerificationJob(
        id=row.id,
        status=status,
        requested_by=row.requested_by,
        after_seq=row.after_seq,
        head_seq=row.head_seq,
        events_to_check=max(0, row.head_seq - row.after_seq),
        started_at=row.started_at,
        finished_at=row.finished_at,
        elapsed_seconds=round((end - row.started_at).total_seconds(), 3),
        result=row.result,
        error=row.error,
    )


class VerificationJobs:
    def __init__(self, db: Database, audit: AuditLog) -> None:
        self.db = db
        self.audit = audit

    def start(self, ctx: Context, after_seq: int = 0, after_hash: str | None = None):
        head_seq, _ = self.audit.head()
        now = utcnow()
        with self.db.transaction() as session:
            row = AuditVerificationRow(
                requested_by=ctx.actor,
                after_seq=after_seq,
                after_hash=after_hash,
                head_seq=head_seq,
                status="running",
                started_at=now,
                heartbeat_at=now,
            )
            session.add(row)
            session.flush()
            job_id = row.id
        threading.Thread(
            target=self._run, args=(job_id, after_seq, after_hash), daemon=True
        ).start()
        return self.get(job_id)

    def get(self, job_id: int) -> VerificationJob:
        with self.db.read() as session:
            row = session.get(AuditVerificationRow, job_id)
            if row is None:
                raise VerificationNotFound(f"no verification with id {job_id}")
            return _job(row, utcnow())

    def _run(self, job_id: int, after_seq: int, after_hash: str | None) -> None:
        done = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job_id, done), daemon=True)
        beat.start()
        try:
            outcome = asdict(self.audit.verify(after_seq, after_hash))
            self._finish(job_id, "done", result=outcome)
        except Exception as exc:  # the job's record must say it failed, whatever it was
            log.exception("audit verification %s failed", job_id)
            self._finish(job_id, "failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            done.set()

    def _heartbeat(self, job_id: int, done: threading.Event) -> None:
        while not done.wait(HEARTBEAT.total_seconds()):
            with self.db.transaction() as session:
                row = session.get(AuditVerificationRow, job_id)
                if row.status == "running":
                    row.heartbeat_at = utcnow()

    def _finish(self, job_id: int, status: str, result=None, error: str | None = None) -> None:
        with self.db.transaction() as session:
            row = session.get(AuditVerificationRow, job_id, with_for_update=True)
            row.status, row.result, row.error = status, result, error
            row.finished_at = row.heartbeat_at = utcnow()
