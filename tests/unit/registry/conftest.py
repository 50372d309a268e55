"""Fixtures shared by the registry tests."""

from __future__ import annotations

import pytest

from openmaas.bootstrap import Services
from openmaas.security import Principal


@pytest.fixture
def acme(services: Services, admin: Principal) -> Principal:
    """The owner of a second, ordinary tenant."""
    _, token = services.accounts.create_tenant(admin, "acme")
    return services.accounts.authenticate(token)


def role_key(services: Services, owner: Principal, role: str) -> Principal:
    """The principal of a new key of ``owner``'s tenant with ``role``."""
    _, token = services.accounts.create_key(owner, name=role, role=role)
    return services.accounts.authenticate(token)
