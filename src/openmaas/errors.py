"""The one exception hierarchy of OpenMaaS (stdlib only).

Every error has an HTTP ``status``, a stable machine-readable ``code`` and a short ``title``;
an instance carries a ``detail`` that says what to do next and, for bad input, the ``field``
that was wrong. The server renders them as RFC 9457 problems; the client raises them back.

    OpenMaaSError (500 internal_error)
    ├── BadRequestError (400 bad_request)
    │   ├── MalformedJSONError (400 malformed_json)
    │   ├── InvalidInputError (400 invalid_input)
    │   │   ├── UnknownInputError (400 unknown_input)
    │   │   ├── MissingInputError (400 missing_input)
    │   │   ├── DatatypeMismatchError (400 datatype_mismatch)
    │   │   ├── ShapeMismatchError (400 shape_mismatch)
    │   │   ├── DataLengthMismatchError (400 data_length_mismatch)
    │   │   └── UnknownOutputError (400 unknown_output)
    │   ├── InvalidArtifactError (400 invalid_artifact)
    │   │   └── UnsafeArtifactError (400 unsafe_artifact)
    │   ├── JSONTooDeepError (400 json_too_deep)
    │   ├── TensorTooLargeError (422 tensor_too_large)
    │   └── RequestValidationError (422 validation_error)
    │       ├── InvalidModelCardError (422 invalid_model_card)
    │       ├── ExplainCostError (422 explain_cost_exceeded)
    │       └── ExplanationUnavailableError (422 explanation_unavailable)
    ├── AuthenticationError (401 unauthenticated)
    │   └── InvalidApiKeyFormatError (401 invalid_api_key_format)
    ├── PermissionDeniedError (403 permission_denied)
    ├── NotFoundError (404 not_found)
    │   ├── ModelNotFoundError (404 model_not_found)
    │   ├── VersionNotFoundError (404 version_not_found)
    │   └── ApiKeyNotFoundError (404 api_key_not_found)
    ├── MethodNotAllowedError (405 method_not_allowed)
    ├── ConflictError (409 conflict)
    ├── PayloadTooLargeError (413 payload_too_large)
    ├── RateLimitedError (429 rate_limited)
    │   └── QuotaExceededError (429 quota_exceeded)
    ├── InferenceError (500 inference_failed)
    └── ServiceUnavailableError (503 service_unavailable)
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ApiKeyNotFoundError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "ContextLengthExceededError",
    "DataLengthMismatchError",
    "DatatypeMismatchError",
    "DeadlineExceededError",
    "DrainingError",
    "ExplainCostError",
    "ExplanationUnavailableError",
    "InferenceError",
    "InvalidApiKeyFormatError",
    "InvalidArtifactError",
    "InvalidInputError",
    "InvalidModelCardError",
    "JSONTooDeepError",
    "MalformedJSONError",
    "MethodNotAllowedError",
    "MissingInputError",
    "ModelNotFoundError",
    "NotFoundError",
    "OpenMaaSError",
    "OverloadedError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimitedError",
    "RequestValidationError",
    "ServiceUnavailableError",
    "ShapeMismatchError",
    "TenantOverShareError",
    "TensorTooLargeError",
    "TokenQuotaExceededError",
    "UnknownInputError",
    "UnknownOutputError",
    "UnsafeArtifactError",
    "VersionNotFoundError",
    "WorkerUnavailableError",
    "WrongModelTaskError",
    "all_error_classes",
    "error_class_for_code",
]


class OpenMaaSError(Exception):
    """Base of every error OpenMaaS raises on purpose."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal server error"

    def __init__(self, detail: str = "", *, field: str | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.field = field


class BadRequestError(OpenMaaSError):
    status = 400
    code = "bad_request"
    title = "Bad request"


class MalformedJSONError(BadRequestError):
    code = "malformed_json"
    title = "The request body is not valid JSON"


class InvalidInputError(BadRequestError):
    code = "invalid_input"
    title = "The inference input does not fit the model"


class UnknownInputError(InvalidInputError):
    code = "unknown_input"
    title = "The model has no input of that name"


class MissingInputError(InvalidInputError):
    code = "missing_input"
    title = "A required model input is missing"


class DatatypeMismatchError(InvalidInputError):
    code = "datatype_mismatch"
    title = "The input datatype does not match the model signature"


class ShapeMismatchError(InvalidInputError):
    code = "shape_mismatch"
    title = "The input shape does not match the model signature"


class DataLengthMismatchError(InvalidInputError):
    code = "data_length_mismatch"
    title = "The number of data elements does not match the shape"


class UnknownOutputError(InvalidInputError):
    code = "unknown_output"
    title = "The model has no output of that name"


class ContextLengthExceededError(BadRequestError):
    code = "context_length_exceeded"
    title = "The prompt and answer do not fit the model's context"


class WrongModelTaskError(BadRequestError):
    code = "wrong_model_task"
    title = "The model does not do what the endpoint asks"


class InvalidArtifactError(BadRequestError):
    code = "invalid_artifact"
    title = "The uploaded model artifact is not valid"


class UnsafeArtifactError(InvalidArtifactError):
    code = "unsafe_artifact"
    title = "The upload contains code (e.g. a pickle) and is refused"


class JSONTooDeepError(BadRequestError):
    code = "json_too_deep"
    title = "The JSON body is nested too deeply"


class RequestValidationError(BadRequestError):
    status = 422
    code = "validation_error"
    title = "The request does not match the expected schema"


class InvalidModelCardError(RequestValidationError):
    code = "invalid_model_card"
    title = "The model card does not match the card schema"


class ExplainCostError(RequestValidationError):
    code = "explain_cost_exceeded"
    title = "The explanation needs more model evaluations than the cap allows"


class ExplanationUnavailableError(RequestValidationError):
    code = "explanation_unavailable"
    title = "This explanation method cannot explain this model or input"


class AuthenticationError(OpenMaaSError):
    status = 401
    code = "unauthenticated"
    title = "A valid API key is required"


class InvalidApiKeyFormatError(AuthenticationError):
    code = "invalid_api_key_format"
    title = "The API key is malformed"


class PermissionDeniedError(OpenMaaSError):
    status = 403
    code = "permission_denied"
    title = "The API key may not do this"


class NotFoundError(OpenMaaSError):
    status = 404
    code = "not_found"
    title = "Not found"


class ModelNotFoundError(NotFoundError):
    code = "model_not_found"
    title = "Model not found"


class VersionNotFoundError(NotFoundError):
    code = "version_not_found"
    title = "Model version not found"


class ApiKeyNotFoundError(NotFoundError):
    code = "api_key_not_found"
    title = "API key not found"


class MethodNotAllowedError(OpenMaaSError):
    status = 405
    code = "method_not_allowed"
    title = "Method not allowed"

    def __init__(self, detail: str = "", *, allow: str = "", field: str | None = None) -> None:
        super().__init__(detail, field=field)
        self.allow = allow  # the methods the path does take: the response's Allow header


class ConflictError(OpenMaaSError):
    status = 409
    code = "conflict"
    title = "The object already exists"


class TensorTooLargeError(BadRequestError):
    status = 422
    code = "tensor_too_large"
    title = "An input tensor has more elements than allowed"


class PayloadTooLargeError(OpenMaaSError):
    status = 413
    code = "payload_too_large"
    title = "The request body is too large"


class _RetryableError(OpenMaaSError):
    """An error the client should retry after ``retry_after`` seconds (``Retry-After``)."""

    def __init__(
        self, detail: str = "", *, retry_after: float = 1.0, field: str | None = None
    ) -> None:
        super().__init__(detail, field=field)
        self.retry_after = retry_after


class RateLimitedError(_RetryableError):
    status = 429
    code = "rate_limited"
    title = "Too many requests"


class QuotaExceededError(RateLimitedError):
    code = "quota_exceeded"
    title = "The daily quota is used up"


class TokenQuotaExceededError(RateLimitedError):
    code = "token_quota_exceeded"
    title = "The key's token quota is used up"


class InferenceError(OpenMaaSError):
    code = "inference_failed"
    title = "The model failed to run"


class TenantOverShareError(RateLimitedError):
    code = "over_share"
    title = "The tenant is over its share of the model"


class ServiceUnavailableError(_RetryableError):
    status = 503
    code = "service_unavailable"
    title = "The service is not ready"


class OverloadedError(ServiceUnavailableError):
    code = "overloaded"
    title = "The model is overloaded"


class DrainingError(ServiceUnavailableError):
    code = "draining"
    title = "The server is shutting down"


class WorkerUnavailableError(ServiceUnavailableError):
    code = "worker_unavailable"
    title = "The worker running the model stopped"


class DeadlineExceededError(OpenMaaSError):
    status = 504
    code = "deadline_exceeded"
    title = "The request's deadline passed"


def all_error_classes() -> list[type[OpenMaaSError]]:
    """Every error class, base first, in definition order."""
    found: list[type[OpenMaaSError]] = [OpenMaaSError]
    pending: list[type[OpenMaaSError]] = [OpenMaaSError]
    while pending:
        for sub in pending.pop(0).__subclasses__():
            if not sub.__name__.startswith("_"):  # private bases carry no code of their own
                found.append(sub)
            pending.append(sub)
    return found


def error_class_for_code(code: str) -> type[OpenMaaSError]:
    """The error class with this stable ``code`` (the base class for an unknown code)."""
    for cls in all_error_classes():
        if cls.code == code:
            return cls
    return OpenMaaSError
