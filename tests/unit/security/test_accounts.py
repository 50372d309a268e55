"""Accounts: authentication, tenants and API keys, each confined to the caller's tenant."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from openmaas.bootstrap import Services
from openmaas.errors import (
    ApiKeyNotFoundError,
    AuthenticationError,
    ConflictError,
    InvalidApiKeyFormatError,
    PermissionDeniedError,
    RequestValidationError,
)
from openmaas.security import Accounts, Action, Principal
from openmaas.security.keys import _checksum, generate_api_key, parse_api_key
from openmaas.store.tables import ApiKey


@pytest.fixture
def accounts(services: Services) -> Accounts:
    return services.accounts


def _key(
    accounts: Accounts, principal: Principal, role: str, scopes: list[str] | None = None
) -> Principal:
    _, token = accounts.create_key(principal, name=f"{role} key", role=role, scopes=scopes)
    return accounts.authenticate(token)


# -- authentication ---------------------------------------------------------------------


def test_admin_key_authenticates_as_platform_owner(admin: Principal) -> None:
    assert admin.tenant_name == "admin"
    assert admin.is_platform
    assert admin.role == "owner"
    assert admin.scopes == {a.value for a in Action}


def test_authenticate_returns_the_key_principal(accounts: Accounts, admin: Principal) -> None:
    info, token = accounts.create_key(admin, name="ci", role="consumer")
    principal = accounts.authenticate(token)
    assert principal.key_id == info.key_id == parse_api_key(token).key_id
    assert principal.tenant_name == "admin"
    assert principal.tenant_id == admin.tenant_id
    assert principal.role == "consumer"
    assert principal.scopes == {"infer", "models:read"}


@pytest.mark.parametrize("token", [None, ""])
def test_missing_token_is_unauthenticated(accounts: Accounts, token: str | None) -> None:
    with pytest.raises(AuthenticationError, match="Bearer") as caught:
        accounts.authenticate(token)
    assert type(caught.value) is AuthenticationError


def test_malformed_token_is_a_format_error(accounts: Accounts, admin_key: str) -> None:
    with pytest.raises(InvalidApiKeyFormatError):
        accounts.authenticate(admin_key[:-1])


def test_unknown_key_is_rejected(accounts: Accounts) -> None:
    token, _ = generate_api_key()
    with pytest.raises(AuthenticationError, match="not valid"):
        accounts.authenticate(token)


def test_known_key_id_with_wrong_secret_is_rejected(accounts: Accounts, admin_key: str) -> None:
    key_id = parse_api_key(admin_key).key_id
    _, other = generate_api_key()
    body = f"om_{key_id}_{other.secret}"
    forged = body + _checksum(body)
    assert parse_api_key(forged).key_id == key_id
    with pytest.raises(AuthenticationError, match="not valid"):
        accounts.authenticate(forged)


def test_key_does_not_work_under_another_server_secret(services: Services, admin_key: str) -> None:
    other = Accounts(services.db, b"a different server secret")
    with pytest.raises(AuthenticationError, match="not valid"):
        other.authenticate(admin_key)
    assert services.accounts.authenticate(admin_key).role == "owner"


def test_revoked_key_is_rejected(accounts: Accounts, admin: Principal) -> None:
    info, token = accounts.create_key(admin, name="temp", role="consumer")
    accounts.authenticate(token)
    revoked = accounts.revoke_key(admin, info.key_id)
    assert revoked.revoked_at is not None
    with pytest.raises(AuthenticationError, match="revoked"):
        accounts.authenticate(token)


def test_revoking_twice_keeps_the_first_time(accounts: Accounts, admin: Principal) -> None:
    info, _ = accounts.create_key(admin, name="temp", role="consumer")
    first = accounts.revoke_key(admin, info.key_id)
    second = accounts.revoke_key(admin, info.key_id)
    assert first.revoked_at == second.revoked_at


def _uncached(services: Services) -> Accounts:
    """Accounts on the same database and server secret, remembering nothing between calls."""
    return Accounts(services.db, services.settings.secret_file.read_bytes(), cache_seconds=0)


def _set_expiry(services: Services, key_id: str, when: datetime) -> None:
    with services.db.session() as session:
        session.execute(update(ApiKey).where(ApiKey.key_id == key_id).values(expires_at=when))
        session.commit()


def test_expired_key_is_rejected(services: Services, admin: Principal) -> None:
    accounts = _uncached(services)
    soon = datetime.now(UTC) + timedelta(hours=1)
    info, token = accounts.create_key(admin, name="short", role="consumer", expires_at=soon)
    assert info.expires_at == soon
    assert accounts.authenticate(token).role == "consumer"
    _set_expiry(services, info.key_id, datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(AuthenticationError, match="expired"):
        accounts.authenticate(token)


def test_cached_key_still_expires_on_time(services: Services, admin: Principal) -> None:
    accounts = Accounts(services.db, services.settings.secret_file.read_bytes(), cache_seconds=60)
    info, token = accounts.create_key(
        admin, name="short", role="consumer", expires_at=datetime.now(UTC) + timedelta(hours=1)
    )
    _set_expiry(services, info.key_id, datetime.now(UTC) + timedelta(milliseconds=500))
    assert accounts.authenticate(token).role == "consumer"  # now cached with that expiry
    time.sleep(0.55)
    with pytest.raises(AuthenticationError, match="expired"):
        accounts.authenticate(token)


def test_revocation_is_immediate_despite_the_cache(services: Services, admin: Principal) -> None:
    accounts = Accounts(services.db, services.settings.secret_file.read_bytes(), cache_seconds=60)
    info, token = accounts.create_key(admin, name="temp", role="consumer")
    assert accounts.authenticate(token).key_id == info.key_id
    accounts.revoke_key(admin, info.key_id)
    with pytest.raises(AuthenticationError, match="revoked"):
        accounts.authenticate(token)


def test_cache_does_not_accept_a_wrong_secret(services: Services, admin_key: str) -> None:
    accounts = Accounts(services.db, services.settings.secret_file.read_bytes(), cache_seconds=60)
    assert accounts.authenticate(admin_key).role == "owner"
    key_id = parse_api_key(admin_key).key_id
    _, other = generate_api_key()
    body = f"om_{key_id}_{other.secret}"
    with pytest.raises(AuthenticationError, match="not valid"):
        accounts.authenticate(body + _checksum(body))


def test_expiry_in_the_past_is_refused(accounts: Accounts, admin: Principal) -> None:
    past = datetime.now(UTC) - timedelta(minutes=1)
    with pytest.raises(RequestValidationError) as caught:
        accounts.create_key(admin, name="old", role="consumer", expires_at=past)
    assert caught.value.field == "expires_at"


def test_naive_expiry_is_not_a_python_error(accounts: Accounts, admin: Principal) -> None:
    """The management API passes pydantic datetimes, which are naive without a UTC offset."""
    naive = datetime.now(UTC).replace(tzinfo=None) + timedelta(days=1)
    refused: RequestValidationError | None = None
    try:
        info, token = accounts.create_key(admin, name="naive", role="consumer", expires_at=naive)
    except RequestValidationError as exc:  # refusing it is fine too
        refused = exc
    if refused is not None:
        assert refused.field == "expires_at"
    else:
        assert info.expires_at is not None
        assert accounts.authenticate(token).role == "consumer"


def test_secret_is_never_stored(services: Services) -> None:
    accounts = services.accounts
    token = accounts.ensure_platform_tenant("admin")
    assert token is not None
    owner = accounts.authenticate(token)
    _, second = accounts.create_key(owner, name="another", role="viewer")
    services.db.close()
    stored = b"".join(p.read_bytes() for p in services.settings.data_dir.glob("openmaas.db*"))
    assert stored
    for full in (token, second):
        secret = parse_api_key(full).secret
        assert secret.encode() not in stored
        assert full.encode() not in stored
        assert parse_api_key(full).key_id.encode() in stored


def test_platform_tenant_is_created_once(accounts: Accounts, admin_key: str) -> None:
    assert admin_key
    assert accounts.ensure_platform_tenant("admin") is None
    assert accounts.ensure_platform_tenant("other") is None


# -- tenants ----------------------------------------------------------------------------


def test_create_tenant_returns_an_owner_key(accounts: Accounts, admin: Principal) -> None:
    tenant, token = accounts.create_tenant(admin, "acme")
    assert tenant.name == "acme"
    assert not tenant.is_platform
    owner = accounts.authenticate(token)
    assert owner.tenant_name == "acme"
    assert owner.role == "owner"
    assert not owner.is_platform
    assert owner.tenant_id != admin.tenant_id


def test_create_tenant_requires_a_platform_admin(accounts: Accounts, admin: Principal) -> None:
    _, token = accounts.create_tenant(admin, "acme")
    acme_owner = accounts.authenticate(token)
    with pytest.raises(PermissionDeniedError):
        accounts.create_tenant(acme_owner, "sneaky")
    platform_publisher = _key(accounts, admin, "publisher")
    with pytest.raises(PermissionDeniedError):
        accounts.create_tenant(platform_publisher, "sneaky")
    platform_admin = _key(accounts, admin, "admin")
    assert accounts.create_tenant(platform_admin, "allowed")[0].name == "allowed"


def test_duplicate_tenant_is_a_conflict(accounts: Accounts, admin: Principal) -> None:
    accounts.create_tenant(admin, "acme")
    with pytest.raises(ConflictError, match="acme"):
        accounts.create_tenant(admin, "acme")
    with pytest.raises(ConflictError):
        accounts.create_tenant(admin, "admin")
    assert [t.name for t in accounts.list_tenants(admin)] == ["acme", "admin"]


@pytest.mark.parametrize(
    "name",
    ["", "Acme", "-acme", "a" * 64, "a/b", "a b", "ünï", "versions", "infer", "health"],
)
def test_invalid_tenant_name_is_rejected(accounts: Accounts, admin: Principal, name: str) -> None:
    with pytest.raises(RequestValidationError) as caught:
        accounts.create_tenant(admin, name)
    assert caught.value.field == "name"


def test_list_tenants_shows_only_own_to_non_admins(accounts: Accounts, admin: Principal) -> None:
    _, token = accounts.create_tenant(admin, "acme")
    accounts.create_tenant(admin, "globex")
    acme = accounts.authenticate(token)
    assert [t.name for t in accounts.list_tenants(acme)] == ["acme"]
    assert [t.name for t in accounts.list_tenants(admin)] == ["acme", "admin", "globex"]


# -- keys -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("caller", "target", "allowed"),
    [
        ("owner", "owner", True),
        ("owner", "viewer", True),
        ("admin", "owner", False),
        ("admin", "admin", True),
        ("admin", "publisher", True),
        ("admin", "viewer", True),
    ],
)
def test_role_ceiling(
    accounts: Accounts, admin: Principal, caller: str, target: str, allowed: bool
) -> None:
    principal = admin if caller == "owner" else _key(accounts, admin, caller)
    if allowed:
        info, _ = accounts.create_key(principal, name="k", role=target)
        assert info.role == target
    else:
        with pytest.raises(PermissionDeniedError, match=target):
            accounts.create_key(principal, name="k", role=target)


@pytest.mark.parametrize("role", ["publisher", "consumer", "viewer"])
def test_roles_below_admin_cannot_manage_keys(
    accounts: Accounts, admin: Principal, role: str
) -> None:
    principal = _key(accounts, admin, role)
    with pytest.raises(PermissionDeniedError):
        accounts.create_key(principal, name="k", role="viewer")
    with pytest.raises(PermissionDeniedError):
        accounts.list_keys(principal)
    with pytest.raises(PermissionDeniedError):
        accounts.revoke_key(principal, principal.key_id)


def test_unknown_role_is_rejected(accounts: Accounts, admin: Principal) -> None:
    with pytest.raises(RequestValidationError) as caught:
        accounts.create_key(admin, name="k", role="superuser")
    assert caught.value.field == "role"


def test_scopes_default_to_the_role(accounts: Accounts, admin: Principal) -> None:
    info, _ = accounts.create_key(admin, name="k", role="publisher")
    assert info.scopes == ["infer", "models:read", "models:write"]


def test_scopes_may_narrow_the_role(accounts: Accounts, admin: Principal) -> None:
    info, token = accounts.create_key(
        admin, name="k", role="publisher", scopes=["models:read", "models:read"]
    )
    assert info.scopes == ["models:read"]
    principal = accounts.authenticate(token)
    assert principal.can(Action.MODELS_READ)
    assert not principal.can(Action.INFER)
    assert not principal.can(Action.MODELS_WRITE)


@pytest.mark.parametrize(
    ("role", "scopes"),
    [
        ("consumer", ["models:write"]),
        ("viewer", ["infer"]),
        ("publisher", ["keys"]),
        ("admin", ["root"]),
    ],
)
def test_scopes_beyond_the_role_are_rejected(
    accounts: Accounts, admin: Principal, role: str, scopes: list[str]
) -> None:
    with pytest.raises(RequestValidationError) as caught:
        accounts.create_key(admin, name="k", role=role, scopes=scopes)
    assert caught.value.field == "scopes"


def test_key_cannot_grant_scopes_its_creator_lacks(accounts: Accounts, admin: Principal) -> None:
    """A key narrowed to 'keys' must not mint a key with more rights than its own."""
    key_manager = _key(accounts, admin, "admin", scopes=["keys"])
    assert not key_manager.can(Action.INFER)
    try:
        info, _ = accounts.create_key(key_manager, name="escalated", role="admin")
    except PermissionDeniedError:
        return
    assert set(info.scopes) <= key_manager.scopes


def test_list_keys_shows_own_tenant_only_and_no_secrets(
    accounts: Accounts, admin: Principal, admin_key: str
) -> None:
    _, acme_token = accounts.create_tenant(admin, "acme")
    acme = accounts.authenticate(acme_token)
    info, token = accounts.create_key(admin, name="mine", role="viewer")
    admin_keys = accounts.list_keys(admin)
    assert [k.key_id for k in admin_keys] == [admin.key_id, info.key_id]
    assert all(k.tenant == "admin" for k in admin_keys)
    assert [k.key_id for k in accounts.list_keys(acme)] == [acme.key_id]
    listed = repr(admin_keys)
    assert parse_api_key(token).secret not in listed
    assert parse_api_key(admin_key).secret not in listed


def test_revoking_another_tenants_key_is_not_found(
    accounts: Accounts, admin: Principal, admin_key: str
) -> None:
    _, acme_token = accounts.create_tenant(admin, "acme")
    acme = accounts.authenticate(acme_token)
    with pytest.raises(ApiKeyNotFoundError):
        accounts.revoke_key(acme, admin.key_id)
    assert accounts.list_keys(admin)[0].revoked_at is None
    assert accounts.authenticate(admin_key).key_id == admin.key_id


def test_revoking_an_unknown_key_is_not_found(accounts: Accounts, admin: Principal) -> None:
    with pytest.raises(ApiKeyNotFoundError, match="keys list"):
        accounts.revoke_key(admin, "nosuchkey000")


def test_long_key_name_is_truncated(services: Services, admin: Principal) -> None:
    info, _ = services.accounts.create_key(admin, name="n" * 500, role="viewer")
    assert info.name == "n" * 100
    with services.db.session() as session:
        stored = session.scalar(select(ApiKey.name).where(ApiKey.key_id == info.key_id))
    assert stored == "n" * 100
