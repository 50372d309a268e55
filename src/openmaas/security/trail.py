"""One call for services to leave an audit record of what a principal did."""

from __future__ import annotations

from openmaas.security.audit import AuditLog
from openmaas.security.policy import Principal

__all__ = ["record_event"]


def record_event(
    audit: AuditLog | None,
    principal: Principal,
    action: str,
    target: str,
    outcome: str = "ok",
    **details: str | int | float | bool | None,
) -> None:
    """Append an audit record (ids and counts only, never payloads or secrets)."""
    if audit is None:
        return
    audit.append(
        actor_tenant=principal.tenant_name,
        actor_key_id=principal.key_id,
        action=action,
        target=target,
        outcome=outcome,
        details=details,
    )
