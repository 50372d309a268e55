"""Members: the people of a tenant, each with a role; API keys may act for a member."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from openmaas.errors import ConflictError, RequestValidationError
from openmaas.security.audit import AuditLog
from openmaas.security.policy import ROLES, Action, Principal, require, role_rank
from openmaas.security.trail import record_event
from openmaas.store.db import Database
from openmaas.store.tables import Member

__all__ = ["MemberInfo", "Members"]


@dataclass(frozen=True)
class MemberInfo:
    """A member as the API shows it."""

    id: int
    name: str
    role: str
    created_at: datetime


class Members:
    """Add and list the members of the caller's tenant (erasure removes them)."""

    def __init__(self, db: Database, audit: AuditLog | None = None) -> None:
        self._db = db
        self._audit = audit

    def add(self, principal: Principal, name: str, role: str) -> MemberInfo:
        """Add a member with a role no higher than the caller's."""
        require(principal, Action.KEYS)
        if role not in ROLES:
            raise RequestValidationError(
                f"unknown role {role!r}; choose one of {', '.join(ROLES)}", field="role"
            )
        if role_rank(role) < role_rank(principal.role):
            raise RequestValidationError(
                f"a key with role {principal.role!r} cannot add a member with role {role!r}",
                field="role",
            )
        if not name.strip() or len(name) > 100:
            raise RequestValidationError("a member name has 1 to 100 characters", field="name")
        with self._db.session() as session:
            member = Member(tenant_id=principal.tenant_id, name=name, role=role)
            session.add(member)
            try:
                session.commit()
            except IntegrityError as exc:
                raise ConflictError(f"member {name!r} already exists") from exc
            info = MemberInfo(member.id, member.name, member.role, member.created_at)
        record_event(self._audit, principal, "member.add", f"member {info.id}", role=role)
        return info

    def list(self, principal: Principal) -> list[MemberInfo]:
        """The members of the caller's tenant."""
        require(principal, Action.KEYS)
        with self._db.session() as session:
            rows = session.scalars(
                select(Member).where(Member.tenant_id == principal.tenant_id).order_by(Member.name)
            ).all()
        return [MemberInfo(m.id, m.name, m.role, m.created_at) for m in rows]
