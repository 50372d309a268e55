"""The policy table: every role x action decision, generated from POLICY itself."""

from __future__ import annotations

import itertools

import pytest

from openmaas.errors import PermissionDeniedError
from openmaas.security.policy import (
    POLICY,
    ROLES,
    Action,
    Principal,
    default_scopes,
    require,
    role_rank,
)


def _principal(role: str, *, is_platform: bool, scopes: list[str] | None = None) -> Principal:
    return Principal(
        tenant_id=1,
        tenant_name="t",
        is_platform=is_platform,
        key_id="k" * 12,
        role=role,
        scopes=frozenset(default_scopes(role) if scopes is None else scopes),
    )


CASES = list(itertools.product(ROLES, list(Action), [True, False]))


@pytest.mark.parametrize(
    ("role", "action", "is_platform"),
    CASES,
    ids=[f"{r}-{a.value}-{'platform' if p else 'tenant'}" for r, a, p in CASES],
)
def test_can_follows_the_policy_table(role: str, action: Action, is_platform: bool) -> None:
    principal = _principal(role, is_platform=is_platform)
    expected = role in POLICY[action] and (action is not Action.ADMIN or is_platform)
    assert principal.can(action) is expected
    if expected:
        require(principal, action)
    else:
        with pytest.raises(PermissionDeniedError, match=action.value):
            require(principal, action)


def test_every_action_has_a_policy_row() -> None:
    assert set(POLICY) == set(Action)
    assert all(roles <= set(ROLES) for roles in POLICY.values())


def test_the_expected_table() -> None:
    table = {role: sorted(a.value for a in Action if role in POLICY[a]) for role in ROLES}
    assert table == {
        "owner": ["admin", "infer", "keys", "models:read", "models:write"],
        "admin": ["admin", "infer", "keys", "models:read", "models:write"],
        "publisher": ["infer", "models:read", "models:write"],
        "consumer": ["infer", "models:read"],
        "viewer": ["models:read"],
    }


@pytest.mark.parametrize("role", ["owner", "admin"])
def test_admin_action_needs_the_platform_tenant(role: str) -> None:
    assert _principal(role, is_platform=True).can(Action.ADMIN)
    assert not _principal(role, is_platform=False).can(Action.ADMIN)


@pytest.mark.parametrize("action", list(Action))
def test_scopes_restrict_the_role(action: Action) -> None:
    principal = _principal("owner", is_platform=True, scopes=[])
    assert not principal.can(action)
    only = _principal("owner", is_platform=True, scopes=[action.value])
    assert only.can(action)
    assert all(not only.can(other) for other in Action if other is not action)


def test_scope_outside_the_role_grants_nothing() -> None:
    viewer = _principal("viewer", is_platform=True, scopes=["infer", "admin", "keys"])
    assert not viewer.can(Action.INFER)
    assert not viewer.can(Action.ADMIN)
    assert not viewer.can(Action.KEYS)


def test_default_scopes_are_the_policy_rows() -> None:
    for role in ROLES:
        assert set(default_scopes(role)) == {a.value for a in Action if role in POLICY[a]}


def test_role_rank_orders_by_power() -> None:
    assert [role_rank(r) for r in ROLES] == list(range(len(ROLES)))
    assert role_rank("owner") < role_rank("admin") < role_rank("viewer")
    for stronger, weaker in itertools.combinations(ROLES, 2):
        assert set(default_scopes(weaker)) <= set(default_scopes(stronger))


def test_denial_message_names_the_tenant_and_role() -> None:
    with pytest.raises(PermissionDeniedError) as caught:
        require(_principal("viewer", is_platform=False), Action.INFER)
    assert "'viewer'" in caught.value.detail
    assert "'t'" in caught.value.detail
