"""Tenants and API keys: create, list, revoke, and authenticate a bearer token."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from openmaas._ttl_cache import TTLCache
from openmaas.errors import (
    ApiKeyNotFoundError,
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    RequestValidationError,
)
from openmaas.names import check_tenant_name
from openmaas.security.audit import AuditLog
from openmaas.security.keys import generate_api_key, hash_secret, parse_api_key, secrets_match
from openmaas.security.policy import (
    ROLES,
    Action,
    Principal,
    default_scopes,
    require,
    role_rank,
)
from openmaas.security.trail import record_event
from openmaas.store.db import Database
from openmaas.store.tables import ApiKey, Member, Tenant, utcnow
from openmaas.weights import DEFAULT_WEIGHT, check_weight

__all__ = ["LOGIN_AUDIT_SECONDS", "Accounts", "ApiKeyInfo", "TenantInfo"]

LOGIN_AUDIT_SECONDS = 3600.0  # a key's use is audited at most once an hour


@dataclass(frozen=True)
class TenantInfo:
    """A tenant as the API shows it."""

    name: str
    is_platform: bool
    created_at: datetime
    weight: float = DEFAULT_WEIGHT  # fair-share weight of its requests in every model queue


@dataclass(frozen=True)
class ApiKeyInfo:
    """An API key as the API shows it (never its secret)."""

    key_id: str
    tenant: str
    name: str
    role: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class _CachedKey:
    """What authentication needs of a key row, kept briefly in memory."""

    secret_hash: str
    revoked: bool
    expires_at: datetime | None
    principal: Principal


def _tenant_info(row: Tenant) -> TenantInfo:
    return TenantInfo(row.name, row.is_platform, row.created_at, row.weight)


def _key_info(row: ApiKey, tenant: str) -> ApiKeyInfo:
    return ApiKeyInfo(
        key_id=row.key_id,
        tenant=tenant,
        name=row.name,
        role=row.role,
        scopes=list(row.scopes),
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


class Accounts:
    """The service behind tenants, keys and authentication."""

    def __init__(
        self,
        db: Database,
        server_secret: bytes,
        cache_seconds: float = 0.0,
        audit: AuditLog | None = None,
        on_tenant_change: Callable[[], None] | None = None,
    ) -> None:
        self._db = db
        self._audit = audit
        # Called after a tenant's weight changes (cached model resolutions carry it).
        self._on_tenant_change = on_tenant_change
        self._server_secret = server_secret
        self._keys: TTLCache[_CachedKey] = TTLCache(cache_seconds)
        # Tokens whose secret matched recently: the hot path skips parsing and hashing.
        self._verified: dict[str, tuple[_CachedKey, float]] = {}
        self._cache_seconds = cache_seconds
        self._logins: dict[str, float] = {}
        self._login_lock = threading.Lock()
        self._audit_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit")

    # -- authentication -------------------------------------------------------------------

    def authenticate(self, token: str | None) -> Principal:
        """The principal of a bearer token; raise AuthenticationError if it is not valid now."""
        if not token:
            raise AuthenticationError(
                "send an API key as 'Authorization: Bearer om_...'; "
                "the first admin key is in the data directory's admin.key file"
            )
        now = time.monotonic()
        hit = self._verified.get(token)
        if hit is not None and hit[1] > now:
            known = hit[0]
        else:
            known = self._verify(token)
            if len(self._verified) >= 10_000:
                self._verified.clear()
            self._verified[token] = (known, now + self._cache_seconds)
        key_id = known.principal.key_id
        if known.revoked:
            raise AuthenticationError(f"the API key {key_id} was revoked")
        if known.expires_at is not None and known.expires_at <= utcnow():
            raise AuthenticationError(f"the API key {key_id} expired at {known.expires_at}")
        self._record_login(known.principal)
        return known.principal

    def _verify(self, token: str) -> _CachedKey:
        """Parse the token and check its secret against the stored hash."""
        parsed = parse_api_key(token)
        known = self._keys.get(parsed.key_id) or self._load_key(parsed.key_id)
        candidate = hash_secret(self._server_secret, parsed)
        if known is None or not secrets_match(known.secret_hash, candidate):
            raise AuthenticationError("the API key is not valid")
        return known

    def flush_audit(self) -> None:
        """Wait until the login records queued so far are written."""
        self._audit_writer.submit(lambda: None).result()

    def _record_login(self, principal: Principal) -> None:
        """Audit a key's use once an hour at most, off the request path (it costs an fsync)."""
        if self._audit is None:
            return
        now = time.monotonic()
        with self._login_lock:
            last = self._logins.get(principal.key_id)
            if last is not None and now - last < LOGIN_AUDIT_SECONDS:
                return
            if len(self._logins) > 100_000:
                self._logins.clear()
            self._logins[principal.key_id] = now
        self._audit_writer.submit(
            record_event, self._audit, principal, "key.login", f"api key {principal.key_id}"
        )

    def _load_key(self, key_id: str) -> _CachedKey | None:
        with self._db.session() as session:
            row = session.execute(
                select(ApiKey, Tenant)
                .join(Tenant, Tenant.id == ApiKey.tenant_id)
                .where(ApiKey.key_id == key_id)
            ).first()
        if row is None:
            return None
        key, tenant = row.ApiKey, row.Tenant
        known = _CachedKey(
            secret_hash=key.secret_hash,
            revoked=key.revoked_at is not None,
            expires_at=key.expires_at,
            principal=Principal(
                tenant_id=tenant.id,
                tenant_name=tenant.name,
                is_platform=tenant.is_platform,
                key_id=key.key_id,
                role=key.role,
                scopes=frozenset(key.scopes),
                tenant_since=tenant.created_at,
            ),
        )
        self._keys.put(key_id, known)
        return known

    # -- tenants --------------------------------------------------------------------------

    def ensure_platform_tenant(self, name: str = "admin") -> str | None:
        """Create the platform tenant and its owner key once; return the key if just made."""
        with self._db.session() as session:
            if session.scalar(select(Tenant).where(Tenant.is_platform)) is not None:
                return None
            tenant = Tenant(name=check_tenant_name(name), is_platform=True)
            session.add(tenant)
            session.flush()
            token, _ = self._add_key(
                session, tenant.id, "bootstrap", "owner", None, default_scopes("owner")
            )
            session.commit()
        return token

    def create_tenant(self, principal: Principal, name: str) -> tuple[TenantInfo, str]:
        """Create a tenant with an owner key; return it and the key (shown once)."""
        require(principal, Action.ADMIN)
        check_tenant_name(name)
        with self._db.session() as session:
            tenant = Tenant(name=name, is_platform=False)
            session.add(tenant)
            try:
                session.flush()
            except IntegrityError as exc:
                raise ConflictError(f"tenant {name!r} already exists; choose another name") from exc
            token, _ = self._add_key(
                session, tenant.id, "owner", "owner", None, default_scopes("owner")
            )
            session.commit()
            info = _tenant_info(tenant)
        record_event(self._audit, principal, "tenant.create", f"tenant {name}")
        return info, token

    def list_tenants(self, principal: Principal) -> list[TenantInfo]:
        """Every tenant (platform admins) or just the caller's own."""
        with self._db.session() as session:
            query = select(Tenant).order_by(Tenant.name)
            if not principal.can(Action.ADMIN):
                query = query.where(Tenant.id == principal.tenant_id)
            rows = session.scalars(query).all()
        return [_tenant_info(t) for t in rows]

    def set_tenant_weight(self, principal: Principal, name: str, weight: float) -> TenantInfo:
        """Set a tenant's fair-share weight (platform admins); model queues use it at once."""
        require(principal, Action.ADMIN)
        weight = check_weight(weight)
        with self._db.session() as session:
            tenant = session.scalar(select(Tenant).where(Tenant.name == name))
            if tenant is None:
                raise NotFoundError(
                    f"no tenant named {name!r}; 'openmaas tenants list' shows them",
                    field="tenant",
                )
            tenant.weight = weight
            session.commit()
            info = _tenant_info(tenant)
        if self._on_tenant_change is not None:
            self._on_tenant_change()
        record_event(self._audit, principal, "tenant.weight", f"tenant {name}", weight=weight)
        return info

    # -- keys -----------------------------------------------------------------------------

    def create_key(
        self,
        principal: Principal,
        *,
        name: str,
        role: str,
        expires_at: datetime | None = None,
        scopes: list[str] | None = None,
        member: str | None = None,
    ) -> tuple[ApiKeyInfo, str]:
        """Create a key in the caller's tenant, no more powerful than the caller's own."""
        require(principal, Action.KEYS)
        if role not in ROLES:
            raise RequestValidationError(
                f"unknown role {role!r}; choose one of {', '.join(ROLES)}", field="role"
            )
        if role_rank(role) < role_rank(principal.role):
            raise PermissionDeniedError(
                f"a key with role {principal.role!r} cannot create a key with role {role!r}"
            )
        if expires_at is not None and expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)  # a naive time means UTC
        if expires_at is not None and expires_at <= utcnow():
            raise RequestValidationError("expires_at must be in the future", field="expires_at")
        allowed = default_scopes(role)
        if scopes is None:
            scopes = [s for s in allowed if s in principal.scopes]
        unknown = sorted(set(scopes) - set(allowed))
        if unknown:
            raise RequestValidationError(
                f"scopes {unknown} are not allowed for role {role!r}; allowed: {allowed}",
                field="scopes",
            )
        beyond = sorted(set(scopes) - principal.scopes)
        if beyond:
            raise PermissionDeniedError(
                f"this key cannot grant scopes it does not hold itself: {beyond}"
            )
        with self._db.session() as session:
            token, row = self._add_key(session, principal.tenant_id, name, role, expires_at, scopes)
            if member is not None:
                row.member_id = session.scalar(
                    select(Member.id).where(
                        Member.tenant_id == principal.tenant_id, Member.name == member
                    )
                )
                if row.member_id is None:
                    raise RequestValidationError(f"no member {member!r}", field="member")
            session.commit()
            info = _key_info(row, principal.tenant_name)
        record_event(self._audit, principal, "key.create", f"api key {info.key_id}", role=info.role)
        return info, token

    def rotate_key(
        self, principal: Principal, key_id: str, overlap_seconds: int
    ) -> tuple[ApiKeyInfo, str]:
        """Replace a key by a new one with the same rights; the old one works ``overlap`` more."""
        with self._db.session() as session:
            old = session.scalar(
                select(ApiKey).where(
                    ApiKey.key_id == key_id, ApiKey.tenant_id == principal.tenant_id
                )
            )
            if old is None or old.revoked_at is not None:
                raise ApiKeyNotFoundError(f"no active API key {key_id!r} in this tenant")
            if key_id != principal.key_id:
                require(principal, Action.KEYS)  # any key may rotate itself
            token, row = self._add_key(
                session, old.tenant_id, old.name, old.role, old.expires_at, list(old.scopes)
            )
            row.member_id = old.member_id
            cutoff = utcnow() + timedelta(seconds=overlap_seconds)
            if old.expires_at is None or old.expires_at > cutoff:
                old.expires_at = cutoff
            session.commit()
            info = _key_info(row, principal.tenant_name)
        self._keys.clear()
        self._verified.clear()
        record_event(
            self._audit, principal, "key.rotate", f"api key {key_id}", new_key_id=info.key_id
        )
        return info, token

    def list_keys(self, principal: Principal) -> list[ApiKeyInfo]:
        """The keys of the caller's tenant (never their secrets)."""
        require(principal, Action.KEYS)
        with self._db.session() as session:
            rows = session.scalars(
                select(ApiKey)
                .where(ApiKey.tenant_id == principal.tenant_id)
                .order_by(ApiKey.created_at)
            ).all()
        return [_key_info(r, principal.tenant_name) for r in rows]

    def revoke_key(self, principal: Principal, key_id: str) -> ApiKeyInfo:
        """Revoke a key of the caller's tenant; effective on the next request."""
        with self._db.session() as session:
            row = session.scalar(
                select(ApiKey).where(
                    ApiKey.key_id == key_id, ApiKey.tenant_id == principal.tenant_id
                )
            )
            if row is None:
                raise ApiKeyNotFoundError(
                    f"no API key {key_id!r} in tenant {principal.tenant_name!r}; "
                    "'openmaas keys list' shows the key ids"
                )
            require(principal, Action.KEYS)
            if row.revoked_at is None:
                row.revoked_at = utcnow()
            session.commit()
            info = _key_info(row, principal.tenant_name)
        self._keys.clear()
        self._verified.clear()
        record_event(self._audit, principal, "key.revoke", f"api key {key_id}")
        return info

    def invalidate(self) -> None:
        """Forget cached keys (after an erasure)."""
        self._keys.clear()
        self._verified.clear()

    def _add_key(
        self,
        session: Session,
        tenant_id: int,
        name: str,
        role: str,
        expires_at: datetime | None,
        scopes: list[str],
    ) -> tuple[str, ApiKey]:
        token, parsed = generate_api_key()
        row = ApiKey(
            key_id=parsed.key_id,
            tenant_id=tenant_id,
            name=name[:100],
            role=role,
            scopes=sorted(set(scopes)),
            secret_hash=hash_secret(self._server_secret, parsed),
            expires_at=expires_at,
        )
        session.add(row)
        session.flush()
        return token, row
