"""Roles, actions and the one policy table (role x action) that every check reads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from openmaas.errors import PermissionDeniedError

__all__ = ["POLICY", "ROLES", "Action", "Principal", "default_scopes", "require", "role_rank"]

ROLES: tuple[str, ...] = ("owner", "admin", "publisher", "consumer", "viewer")


class Action(StrEnum):
    """What a key may be allowed to do; the values double as key scopes."""

    INFER = "infer"
    MODELS_READ = "models:read"
    MODELS_WRITE = "models:write"
    KEYS = "keys"
    ADMIN = "admin"


# The policy table: which roles may perform each action (within their own tenant).
POLICY: dict[Action, frozenset[str]] = {
    Action.MODELS_READ: frozenset(ROLES),
    Action.INFER: frozenset({"owner", "admin", "publisher", "consumer"}),
    Action.MODELS_WRITE: frozenset({"owner", "admin", "publisher"}),
    Action.KEYS: frozenset({"owner", "admin"}),
    # Platform administration (creating tenants) also needs a key of the platform tenant.
    Action.ADMIN: frozenset({"owner", "admin"}),
}


def role_rank(role: str) -> int:
    """Lower is more powerful: owner 0 ... viewer 4."""
    return ROLES.index(role)


def default_scopes(role: str) -> list[str]:
    """Every action the role may perform, as scope strings."""
    return [action.value for action, roles in POLICY.items() if role in roles]


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant, role and scopes of the API key that authenticated."""

    tenant_id: int
    tenant_name: str
    is_platform: bool
    key_id: str
    role: str
    scopes: frozenset[str]
    # When the tenant was created: records and receipts older than it belong to an erased
    # tenant that had the same name or id, never to this one.
    tenant_since: datetime | None = None

    def can(self, action: Action) -> bool:
        """Whether the policy table and the key's scopes both allow ``action``."""
        if action is Action.ADMIN and not self.is_platform:
            return False
        return self.role in POLICY[action] and action.value in self.scopes


def require(principal: Principal, action: Action) -> None:
    """Raise PermissionDeniedError unless ``principal`` may perform ``action``."""
    if not principal.can(action):
        raise PermissionDeniedError(
            f"this API key (role {principal.role!r}, scopes {sorted(principal.scopes)}) may not "
            f"perform {action.value!r}; ask an owner or admin of tenant "
            f"{principal.tenant_name!r} for a key with that right"
        )
