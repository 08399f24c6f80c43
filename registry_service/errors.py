"""The service's one exception hierarchy and its single mapping to HTTP.

Every layer raises these; only ``STATUS_BY_ERROR`` knows about HTTP status codes,
and ``problem_body`` renders any of them as RFC 9457 problem details.
"""

from __future__ import annotations

from typing import Any


class RegistryError(Exception):
    """Base of every error the service reports to a caller."""

    code = "internal-error"
    title = "Internal server error"

    def __init__(
        self, detail: str | None = None, *, errors: list[dict] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.errors = errors or []
        self.extra = extra


class ValidationError(RegistryError):
    code = "validation-error"
    title = "Request validation failed"


class BadRequest(RegistryError):
    code = "bad-request"
    title = "Bad request"


class UnsupportedMediaType(RegistryError):
    code = "unsupported-media-type"
    title = "Unsupported media type"


class AuthenticationError(RegistryError):
    code = "unauthenticated"
    title = "Authentication required"


class PermissionDenied(RegistryError):
    code = "forbidden"
    title = "Permission denied"


class NotFound(RegistryError):
    code = "not-found"
    title = "Resource not found"


class ModelNotFound(NotFound):
    code = "model-not-found"
    title = "Registered model not found"


class VersionNotFound(NotFound):
    code = "version-not-found"
    title = "Model version not found"


class RunNotFound(NotFound):
    code = "run-not-found"
    title = "Run not found"


class ExperimentNotFound(NotFound):
    code = "experiment-not-found"
    title = "Experiment not found"


class NoMatchingRun(NotFound):
    code = "no-matching-run"
    title = "No run matches"


class TokenNotFound(NotFound):
    code = "token-not-found"
    title = "Token not found"


class PromotionNotFound(NotFound):
    code = "promotion-not-found"
    title = "Promotion request not found"


class WebhookNotFound(NotFound):
    code = "webhook-not-found"
    title = "Webhook not found"


class DeliveryNotFound(NotFound):
    code = "delivery-not-found"
    title = "Webhook delivery not found"


class AlertNotFound(NotFound):
    code = "alert-not-found"
    title = "Alert not found"


class TargetNotHeld(NotFound):
    code = "target-not-held"
    title = "No version holds this target"


class VersionNotServable(PermissionDenied):
    code = "version-not-servable"
    title = "This version may not answer traffic"


class SelfApproval(PermissionDenied):
    code = "self-approval"
    title = "Requesters may not approve their own request"


class NotEligible(PermissionDenied):
    code = "not-eligible"
    title = "Not eligible to review this request"


class FeedbackNotAllowed(PermissionDenied):
    code = "feedback-not-allowed"
    title = "Not allowed to send feedback for these predictions"


class Conflict(RegistryError):
    code = "conflict"
    title = "Conflict"


class AlreadyExists(Conflict):
    code = "already-exists"
    title = "Resource already exists"


class IllegalTransition(Conflict):
    code = "illegal-transition"
    title = "Transition not allowed"


class AlreadyReviewed(Conflict):
    code = "already-approved"
    title = "Already approved by this principal"


class OpenRequestExists(Conflict):
    code = "open-request-exists"
    title = "An open request for this version and target exists"


class QuorumUnreachable(Conflict):
    code = "quorum-unreachable"
    title = "Not enough eligible approvers"


class IdempotencyInFlight(Conflict):
    code = "idempotency-in-flight"
    title = "A request with this Idempotency-Key is still being processed"


class IdempotencyKeyReused(ValidationError):
    code = "idempotency-key-reused"
    title = "Idempotency-Key was used with a different request"


class WebhookTargetRefused(ValidationError):
    """A webhook URL naming (or resolving to) an internal address."""

    code = "webhook-target-refused"
    title = "Webhooks may not call this address"


class PreconditionFailed(RegistryError):
    code = "precondition-failed"
    title = "The resource changed since it was read"


class PreconditionRequired(RegistryError):
    code = "precondition-required"
    title = "Send If-Match with the ETag you read"


class ServingUnavailable(RegistryError):
    """Neither the holder nor its fallback can answer a prediction."""

    code = "model-unavailable"
    title = "No model version can answer"


class UpstreamError(RegistryError):
    """MLflow answered with something we cannot interpret."""

    code = "mlflow-error"
    title = "MLflow request failed"


class UpstreamUnavailable(UpstreamError):
    code = "mlflow-unavailable"
    title = "MLflow is unavailable"


class OutcomeUnknown(UpstreamUnavailable):
    """MLflow never confirmed a write and could not be read back; the intent stays
    pending until the sweep settles it."""

    code = "outcome-unknown"
    title = "MLflow did not confirm the change"


class AppliedDespiteError(UpstreamError):
    """MLflow reported a failure, yet the change (or part of it) is there: recorded."""

    code = "applied-despite-error"
    title = "MLflow reported an error but applied the change"


class ConsistencyError(RegistryError):
    """A change could not be recorded; says whether it was rolled back in MLflow."""

    code = "not-recorded"
    title = "Change could not be recorded"


class ServiceUnavailable(RegistryError):
    code = "service-unavailable"
    title = "Service unavailable"


# A version's artifacts: their signed manifest and the pickle scan's findings.
class ManifestNotFound(NotFound):
    code = "manifest-not-found"
    title = "No manifest was recorded for this version"


class UnsafeArtifact(Conflict):
    """The pickle scan found dangerous globals, and the policy does not allow them."""

    code = "unsafe-artifact"
    title = "The version's artifacts are unsafe to load"


class ArtifactsUnreadable(UpstreamError):
    code = "artifacts-unreadable"
    title = "The version's artifacts could not be read"


# The one place that turns errors into HTTP status codes: most specific class wins.
STATUS_BY_ERROR: dict[type[RegistryError], int] = {
    ValidationError: 422,
    BadRequest: 400,
    UnsupportedMediaType: 415,
    AuthenticationError: 401,
    PermissionDenied: 403,
    NotFound: 404,
    Conflict: 409,
    PreconditionFailed: 412,
    PreconditionRequired: 428,
    ServingUnavailable: 503,
    UpstreamError: 502,
    UpstreamUnavailable: 503,
    ServiceUnavailable: 503,
    ConsistencyError: 500,
    RegistryError: 500,
}


def status_for(error: RegistryError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


PROBLEM_TYPE_BASE = "/problems/"


def problem_body(
    *,
    status: int,
    code: str,
    title: str,
    detail: str,
    errors: list[dict] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if errors:
        body["errors"] = errors
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


def field_errors(messages: Any, location: str | None = None, prefix: str = "") -> list[dict]:
    """Flatten marshmallow/webargs nested messages into ``[{field, location, message}]``."""
    out: list[dict] = []
    if isinstance(messages, dict):
        for key, value in messages.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if key == "_schema":
                name = prefix or "_schema"
            out.extend(field_errors(value, location, name))
    elif isinstance(messages, list | tuple):
        for item in messages:
            if isinstance(item, dict | list | tuple):
                out.extend(field_errors(item, location, prefix))
            else:
                out.append({"field": prefix, "location": location, "message": str(item)})
    else:
        out.append({"field": prefix, "location": location, "message": str(messages)})
    return out
