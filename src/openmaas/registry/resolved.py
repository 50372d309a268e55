"""What serving needs to run one version of a model, built once per resolution and cached."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from openmaas.errors import RequestValidationError
from openmaas.runtimes import Signature
from openmaas.store.tables import Grant, Model, ModelVersion, Tenant
from openmaas.weights import DEFAULT_WEIGHT

if TYPE_CHECKING:
    from openmaas.serving.deployment import Deployment

__all__ = [
    "ResolvedVersion",
    "artifact_context",
    "background_context",
    "check_deployment",
    "deployment_data",
    "resolution",
    "stored_deployment",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolvedVersion:
    """What serving needs to run one version of a model."""

    model_id: str
    version: int
    format: str
    sha256: str
    signature: Signature
    owner_tenant_id: int
    model_pk: int
    blob_sha256: str | None
    wrapped_key: bytes | None
    deployment: Deployment  # the model's serving settings (defaults when none are stored)
    weight: float = DEFAULT_WEIGHT  # the caller's fair-share weight: its grant's, else its tenant's
    grant_id: int | None = None  # set when the caller reaches the model through a grant
    grant_quota_per_day: int | None = None
    facts: Mapping[str, Any] = field(default_factory=dict)  # what publishing found (labels, ...)
    background_blob_sha256: str | None = None  # encrypted background rows for explanations


def artifact_context(tenant_id: int, model_pk: int, version: int) -> bytes:
    """What an artifact's encryption is bound to: tenant, model and version."""
    return f"artifact:tenant={tenant_id}:model={model_pk}:version={version}".encode()


def background_context(tenant_id: int, model_pk: int, version: int) -> bytes:
    """What a version's background rows are bound to (encrypted with its data key)."""
    return f"background:tenant={tenant_id}:model={model_pk}:version={version}".encode()


def stored_deployment(data: dict[str, Any] | None, label: str) -> Deployment:
    """The Deployment stored for a model; the defaults if none is, or it no longer validates.

    A stored deployment was valid when written; if a later release tightens the rules, the
    model keeps serving (with the defaults, and a warning) instead of failing every request.
    """
    # Imported here: ``openmaas.serving`` imports the registry at import time.
    from openmaas.serving.deployment import Deployment

    try:
        return Deployment.from_dict(data)
    except (RequestValidationError, TypeError) as exc:
        detail = exc.detail if isinstance(exc, RequestValidationError) else str(exc)
        log.warning("model %s: stored deployment is not valid (%s); using defaults", label, detail)
        return Deployment()


def check_deployment(deployment: Deployment) -> Deployment:
    """``deployment`` if its numbers are finite (JSON and the audit log carry no NaN or inf)."""
    for name, value in deployment.to_dict().items():
        if isinstance(value, float) and not math.isfinite(value):
            raise RequestValidationError(f"{name} must be a finite number", field=name)
    return deployment


def deployment_data(deployment: Deployment) -> dict[str, Any] | None:
    """What ``models.deployment`` stores: the fields, or NULL for the defaults."""
    data = deployment.to_dict()
    return None if deployment == type(deployment)() else data


def resolution(
    model: Model,
    owner: Tenant,
    row: ModelVersion,
    *,
    weight: float,
    grant: Grant | None = None,
) -> ResolvedVersion:
    """The resolution of version ``row`` for a caller of ``weight`` (through ``grant``)."""
    model_id = f"{owner.name}/{model.name}"
    return ResolvedVersion(
        model_id=model_id,
        version=row.version,
        format=row.format,
        sha256=row.sha256,
        signature=Signature.from_dict(row.signature),
        owner_tenant_id=owner.id,
        model_pk=model.id,
        blob_sha256=row.blob_sha256,
        wrapped_key=row.wrapped_key,
        deployment=stored_deployment(model.deployment, model_id),
        weight=weight if grant is None or grant.weight is None else grant.weight,
        grant_id=None if grant is None else grant.id,
        grant_quota_per_day=None if grant is None else grant.quota_per_day,
        facts=dict(row.card),
        background_blob_sha256=row.background_blob_sha256,
    )
