"""Feedback: ground truth for logged predictions, from those allowed to give it.

Feedback drives accuracy figures, accuracy alerts (which may roll Production back) and
A/B verdicts (which may open promotion requests), so not anyone may judge a prediction.
A prediction is judged by the principal that asked for it, by the principals the model's
policy names in ``feedback_principals``, or by an admin. A call with any item refused is
refused whole, naming the request ids; request ids are minted by the service, so a
caller cannot aim feedback at a prediction by choosing its id.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from registry_service.db.base import utcnow
from registry_service.db.database import Database
from registry_service.db.models import PredictionFeedbackRow, PredictionRow
from registry_service.domain.entities import Principal, Role
from registry_service.domain.names import check_model_name
from registry_service.errors import Conflict, FeedbackNotAllowed, ValidationError
from registry_service.monitoring.rollup import feedback_delta
from registry_service.monitoring.store import fold_feedback, rollup_key
from registry_service.services.context import Context
from registry_service.services.policies import PolicyService

MAX_FEEDBACK = 1000
# Request ids named in a refusal's detail; the problem's refused_request_ids has them all.
NAMED_IN_DETAIL = 10


def may_judge(principal: Principal, predicted_by: str, feedback_principals: Iterable[str]) -> bool:
    """Whether ``principal`` may send ground truth for a prediction ``predicted_by`` made."""
    return (
        principal.name == predicted_by
        or principal.name in feedback_principals
        or Role.ADMIN.value in principal.roles
    )


class FeedbackService:
    def __init__(self, db: Database, policies: PolicyService) -> None:
        self.db = db
        self.policies = policies

    def record(
        self, ctx: Context, principal: Principal, name: str, items: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Record ``items`` (``request_id``, ``actual``) for ``name``'s predictions.

        Request ids not (yet) in the model's log are answered as unknown; the log is
        written up to a second after the prediction's answer.
        """
        check_model_name(name)
        if not 1 <= len(items) <= MAX_FEEDBACK:
            raise ValidationError(
                f"send between 1 and {MAX_FEEDBACK} feedback items",
                errors=[{"field": "items", "location": "json", "message": "1 to 1000 items"}],
            )
        actual = {item["request_id"]: item["actual"] for item in items}
        with self.db.transaction() as session:
            rows = session.execute(
                select(
                    PredictionRow.request_id,
                    PredictionRow.principal,
                    PredictionRow.model_version,
                    PredictionRow.variant,
                    PredictionRow.created_at,
                    PredictionRow.outputs,
                ).where(
                    PredictionRow.model_name == name,
                    PredictionRow.request_id.in_(list(actual)),
                )
            ).all()
            allowed = self.policies.load(session, name).feedback_principals
            # Every row counts: ids logged before the service minted them all may repeat.
            refused = sorted(
                {r.request_id for r in rows if not may_judge(principal, r.principal, allowed)}
            )
            if refused:
                named = ", ".join(refused[:NAMED_IN_DETAIL])
                more = len(refused) - NAMED_IN_DETAIL
                raise FeedbackNotAllowed(
                    f"{principal.name!r} may not send feedback for predictions made by "
                    f"others: {named}"
                    + (f" and {more} more" if more > 0 else "")
                    + f"; ask an admin to add it to the feedback_principals of {name!r}'s "
                    "policy",
                    refused_request_ids=refused,
                )
            predictions = {r.request_id: r for r in rows}
            known = set(predictions)
            if known:
                self._write(session, ctx, name, predictions, actual)
        unknown = sorted(set(actual) - known)
        return {"accepted": len(known), "unknown_request_ids": unknown}

    def _write(
        self,
        session,
        ctx: Context,
        name: str,
        predictions: dict[str, Any],
        actual: dict[str, Any],
    ) -> None:
        known = sorted(predictions)
        # What is taken out is what is subtracted: one statement, so a concurrent call
        # cannot slip a row in between the read and the delete.
        previous = {
            rid: actual_
            for rid, model, actual_ in session.execute(
                delete(PredictionFeedbackRow)
                .where(PredictionFeedbackRow.request_id.in_(known))
                .returning(
                    PredictionFeedbackRow.request_id,
                    PredictionFeedbackRow.model_name,
                    PredictionFeedbackRow.actual,
                )
            )
            if model == name
        }
        now = utcnow()
        session.add_all(
            PredictionFeedbackRow(
                request_id=rid,
                model_name=name,
                actual=actual[rid],
                received_at=now,
                received_by=ctx.actor,
            )
            for rid in known
        )
        # Re-sent ground truth replaces the old: its share of the rollup goes too.
        deltas: dict[Any, list[dict[str, Any]]] = {}
        for rid in known:
            row = predictions[rid]
            key = rollup_key(name, row.model_version, row.variant, row.created_at)
            if rid in previous:
                deltas.setdefault(key, []).append(
                    feedback_delta(row.outputs, previous[rid], sign=-1)
                )
            deltas.setdefault(key, []).append(feedback_delta(row.outputs, actual[rid]))
        try:
            session.flush()
        except IntegrityError:
            raise Conflict(
                "another call is recording ground truth for these requests; send again"
            ) from None
        fold_feedback(session, deltas)
