"""Leader election and the job loop.

Every serving process runs a Scheduler; the one that holds the leadership lock runs the
jobs that are due, the others only try to take the lock now and then. Due times come
from the database (each job's last start), so a new leader carries on the schedule of
the old one rather than starting it over.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from registry_service.db.base import utcnow
from registry_service.db.database import Database
from registry_service.db.locks import Leadership, NamedLocks
from registry_service.db.models import ScheduledJobRow
from registry_service.errors import RegistryError
from registry_service.services.audit import to_json_value
from registry_service.services.context import Context

log = logging.getLogger(__name__)

LOCK_NAME = "scheduler:leader"
ACTOR = "scheduler"


@dataclass(frozen=True)
class Job:
    name: str
    every: timedelta
    run: Callable[[Context], dict[str, Any]]  # returns the figures of the run
    description: str = ""


@dataclass(frozen=True)
class JobState:
    name: str
    description: str
    every_seconds: float
    leader: str | None
    last_started_at: datetime | None
    last_finished_at: datetime | None
    last_duration_ms: float | None
    last_outcome: str | None
    last_result: dict[str, Any] | None
    last_error: str | None
    runs: int
    failures: int
    next_due_at: datetime | None


def identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Scheduler:
    def __init__(
        self,
        db: Database,
        locks: NamedLocks,
        jobs: list[Job],
        tick: float = 1.0,
        retry_leadership: float = 5.0,
        clock: Callable[[], datetime] = utcnow,
        lock_name: str = LOCK_NAME,
        name: str | None = None,
    ) -> None:
        """``name``: how runs are signed (default host:pid, taken again at start)."""
        self.db = db
        self.jobs = jobs
        self.tick = tick
        self.retry_leadership = retry_leadership
        self.clock = clock
        self.leadership = Leadership(locks, lock_name)
        self._name = name
        self.identity = name or identity()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def leading(self) -> bool:
        return self.leadership.held

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self.identity = self._name or identity()  # after a fork, another process
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.leadership.release()

    def _loop(self) -> None:
        next_try = 0.0
        while not self._stop.is_set():
            try:
                if not self.leadership.held and time.monotonic() >= next_try:
                    next_try = time.monotonic() + self.retry_leadership
                    if self.leadership.try_acquire():
                        log.info("scheduler: %s leads", self.identity)
                if self.leadership.held and self.leadership.still_held():
                    self.run_due()
            except Exception:  # the loop outlives a database outage; it retries next tick
                log.exception("scheduler tick failed")
            self._stop.wait(self.tick)

    def run_due(self) -> list[str]:
        """Run every job whose interval has passed since its last start; their names."""
        with self.db.read() as session:
            started = dict(
                session.execute(select(ScheduledJobRow.name, ScheduledJobRow.last_started_at)).all()
            )
        ran = []
        for job in self.jobs:
            # Checked before each job: a term that ended mid-cycle runs nothing more.
            if self._stop.is_set() or not self.leadership.still_held():
                break
            last = started.get(job.name)
            if last is None or self.clock() - last >= job.every:
                self.run(job)
                ran.append(job.name)
        return ran

    def run(self, job: Job) -> None:
        began = self.clock()
        clock = time.perf_counter()
        self._record(job, began=began)
        try:
            result, error = job.run(Context(ACTOR, None)), None
        except RegistryError as exc:
            result, error = None, f"{exc.title}: {exc.detail}"
        except Exception as exc:  # a job's bug must not stop the others; its trace is logged
            log.exception("scheduled job %s failed", job.name)
            result, error = None, f"{type(exc).__name__}: {str(exc)[:300]}"
        self._record(
            job,
            finished=self.clock(),
            duration_ms=(time.perf_counter() - clock) * 1000,
            result=result,
            error=error,
        )

    def _record(
        self,
        job: Job,
        began: datetime | None = None,
        finished: datetime | None = None,
        duration_ms: float | None = None,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        with self.db.transaction() as session:
            row = session.get(ScheduledJobRow, job.name, with_for_update=True)
            if row is None:
                row = ScheduledJobRow(name=job.name, runs=0, failures=0)
                session.add(row)
            row.every_seconds = job.every.total_seconds()
            row.leader = self.identity
            if began is not None:
                row.last_started_at = began
                return
            row.last_finished_at, row.last_duration_ms = finished, duration_ms
            row.last_outcome = "failed" if error else "ok"
            row.last_result = to_json_value(result) if result is not None else None
            row.last_error = error
            row.runs += 1
            row.failures += int(error is not None)

    def states(self) -> list[JobState]:
        with self.db.read() as session:
            rows = {r.name: r for r in session.execute(select(ScheduledJobRow)).scalars()}
            out = []
            for job in self.jobs:
                row = rows.get(job.name)
                last = row.last_started_at if row else None
                out.append(
                    JobState(
                        name=job.name,
                        description=job.description,
                        every_seconds=job.every.total_seconds(),
                        leader=row.leader if row else None,
                        last_started_at=last,
                        last_finished_at=row.last_finished_at if row else None,
                        last_duration_ms=row.last_duration_ms if row else None,
                        last_outcome=row.last_outcome if row else None,
                        last_result=row.last_result if row else None,
                        last_error=row.last_error if row else None,
                        runs=row.runs if row else 0,
                        failures=row.failures if row else 0,
                        next_due_at=(last + job.every) if last else None,
                    )
                )
            return out
