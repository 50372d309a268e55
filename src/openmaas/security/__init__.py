"""Security: API keys, roles and the policy table, tenants and authentication."""

from __future__ import annotations

from openmaas.security.accounts import Accounts, ApiKeyInfo, TenantInfo
from openmaas.security.policy import ROLES, Action, Principal

__all__ = ["ROLES", "Accounts", "Action", "ApiKeyInfo", "Principal", "TenantInfo"]
