"""Deployments and weights in the registry: stored per model, carried by every resolution."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select

from openmaas.bootstrap import Services
from openmaas.errors import (
    ModelNotFoundError,
    NotFoundError,
    PermissionDeniedError,
    RequestValidationError,
)
from openmaas.registry import ModelRef, Registry, Sharing
from openmaas.security import Accounts, Principal
from openmaas.serving.deployment import Deployment
from openmaas.store import LocalBlobStore
from openmaas.store.tables import Model
from tests.helpers.models import scale_model
from tests.unit.registry.conftest import role_key

MINE = ModelRef(None, "scaler")
THEIRS = ModelRef("acme", "shared")
PINNED = Deployment(min_replicas=1, max_replicas=2, max_batch_size=16, cpu=0.5)


@pytest.fixture
def cached(services: Services) -> Registry:
    """A registry whose resolutions stay cached a minute, unless a write clears them."""
    return Registry(
        services.db,
        LocalBlobStore(services.settings.blob_dir),
        services.keyring,
        cache_seconds=60,
        audit=services.audit,
    )


# -- get and set ----------------------------------------------------------------------------


def test_a_new_model_has_the_default_deployment(cached: Registry, admin: Principal) -> None:
    cached.publish(admin, "scaler", scale_model())
    assert cached.get_deployment(admin, MINE) == Deployment()
    assert cached.resolve(admin, MINE).deployment == Deployment()


def test_set_deployment_is_stored_and_resolutions_see_it_at_once(
    cached: Registry, admin: Principal
) -> None:
    cached.publish(admin, "scaler", scale_model())
    assert cached.resolve(admin, MINE).deployment == Deployment()  # now cached
    assert cached.set_deployment(admin, MINE, PINNED) == PINNED
    assert cached.get_deployment(admin, ModelRef("admin", "scaler")) == PINNED
    assert cached.resolve(admin, MINE).deployment == PINNED


def test_the_resolution_parses_the_deployment_once(cached: Registry, admin: Principal) -> None:
    cached.publish(admin, "scaler", scale_model())
    cached.set_deployment(admin, MINE, PINNED)
    assert cached.resolve(admin, MINE).deployment is cached.resolve(admin, MINE).deployment


def test_the_defaults_are_stored_as_null(services: Services, admin: Principal) -> None:
    registry = services.registry
    registry.publish(admin, "scaler", scale_model())
    registry.set_deployment(admin, MINE, PINNED)
    registry.set_deployment(admin, MINE, Deployment())
    with services.db.session() as session:
        assert session.scalars(select(Model.deployment)).one() is None


def test_set_deployment_is_audited_with_its_fields(services: Services, admin: Principal) -> None:
    services.registry.publish(admin, "scaler", scale_model())
    services.registry.set_deployment(admin, MINE, PINNED)
    record = services.audit.records(limit=1000)[-1]
    assert (record.action, record.target) == ("model.deploy", "admin/scaler")
    assert record.details == PINNED.to_dict()


def test_non_finite_numbers_are_refused(services: Services, admin: Principal) -> None:
    services.registry.publish(admin, "scaler", scale_model())
    for bad in (Deployment(idle_seconds=float("nan")), Deployment(idle_seconds=float("inf"))):
        with pytest.raises(RequestValidationError, match="finite") as caught:
            services.registry.set_deployment(admin, MINE, bad)
        assert caught.value.field == "idle_seconds"
    assert services.registry.get_deployment(admin, MINE) == Deployment()


def test_a_stored_deployment_that_no_longer_validates_serves_with_defaults(
    services: Services, admin: Principal, caplog: pytest.LogCaptureFixture
) -> None:
    services.registry.publish(admin, "scaler", scale_model())
    with services.db.session() as session:
        session.scalars(select(Model)).one().deployment = {"min_replicas": -1, "gone": True}
        session.commit()
    with caplog.at_level(logging.WARNING):
        assert services.registry.resolve(admin, MINE).deployment == Deployment()
    assert "admin/scaler" in caplog.text
    assert services.registry.pinned() == []


# -- who may ----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["consumer", "viewer"])
def test_setting_needs_models_write(services: Services, admin: Principal, role: str) -> None:
    services.registry.publish(admin, "scaler", scale_model())
    reader = role_key(services, admin, role)
    assert services.registry.get_deployment(reader, MINE) == Deployment()
    with pytest.raises(PermissionDeniedError):
        services.registry.set_deployment(reader, MINE, PINNED)


def test_a_publisher_may_set_it(services: Services, admin: Principal) -> None:
    services.registry.publish(admin, "scaler", scale_model())
    publisher = role_key(services, admin, "publisher")
    assert services.registry.set_deployment(publisher, MINE, PINNED) == PINNED


def test_a_foreign_private_model_looks_missing(
    services: Services, admin: Principal, acme: Principal
) -> None:
    services.registry.publish(acme, "shared", scale_model())
    with pytest.raises(ModelNotFoundError):
        services.registry.get_deployment(admin, THEIRS)
    with pytest.raises(ModelNotFoundError):
        services.registry.set_deployment(admin, THEIRS, PINNED)


def test_a_visible_foreign_model_is_read_only(
    services: Services, admin: Principal, acme: Principal
) -> None:
    services.registry.publish(acme, "shared", scale_model(), visibility="public")
    services.registry.set_deployment(acme, ModelRef(None, "shared"), PINNED)
    assert services.registry.get_deployment(admin, THEIRS) == PINNED
    with pytest.raises(PermissionDeniedError):
        services.registry.set_deployment(admin, THEIRS, Deployment())


# -- weights ----------------------------------------------------------------------------------


@pytest.fixture
def accounts(services: Services, cached: Registry) -> Accounts:
    """Accounts wired the way the server wires them: a weight change clears resolutions."""
    return Accounts(
        services.db, b"s" * 32, audit=services.audit, on_tenant_change=cached.invalidate
    )


def test_the_callers_tenant_weight_is_resolved(
    cached: Registry, accounts: Accounts, admin: Principal, acme: Principal
) -> None:
    cached.publish(acme, "shared", scale_model(), visibility="public")
    assert cached.resolve(admin, THEIRS).weight == 1.0
    assert cached.resolve(acme, THEIRS).weight == 1.0
    info = accounts.set_tenant_weight(admin, "admin", 3.0)
    assert (info.name, info.weight) == ("admin", 3.0)
    assert cached.resolve(admin, THEIRS).weight == 3.0  # the caller's weight, at once
    assert cached.resolve(acme, THEIRS).weight == 1.0  # not the owner's
    assert [(t.name, t.weight) for t in accounts.list_tenants(admin)] == [
        ("acme", 1.0),
        ("admin", 3.0),
    ]


def test_a_grants_weight_overrides_the_tenants(
    services: Services, cached: Registry, accounts: Accounts, admin: Principal, acme: Principal
) -> None:
    sharing = Sharing(services.db, on_change=cached.invalidate, audit=services.audit)
    cached.publish(acme, "shared", scale_model())
    accounts.set_tenant_weight(admin, "admin", 2.0)
    granted = sharing.share(acme, ModelRef(None, "shared"), "admin", weight=5.0)
    assert granted.weight == 5.0
    resolved = cached.resolve(admin, THEIRS)
    assert (resolved.grant_id is not None, resolved.weight) == (True, 5.0)
    assert [g.weight for g in sharing.grants(acme, ModelRef(None, "shared"))] == [5.0]
    sharing.share(acme, ModelRef(None, "shared"), "admin")  # again, without a weight
    assert cached.resolve(admin, THEIRS).weight == 2.0  # back to the tenant's
    with pytest.raises(RequestValidationError):
        sharing.share(acme, ModelRef(None, "shared"), "admin", weight=0)


def test_setting_a_tenant_weight_needs_a_platform_admin(
    accounts: Accounts, admin: Principal, acme: Principal
) -> None:
    with pytest.raises(PermissionDeniedError):
        accounts.set_tenant_weight(acme, "acme", 2.0)
    with pytest.raises(NotFoundError) as missing:
        accounts.set_tenant_weight(admin, "nobody", 2.0)
    assert missing.value.field == "tenant"
    for bad in (0, -1, 1000.5, float("nan"), float("inf")):
        with pytest.raises(RequestValidationError):
            accounts.set_tenant_weight(admin, "acme", bad)
    assert accounts.set_tenant_weight(admin, "acme", 1000).weight == 1000.0


# -- pinned -----------------------------------------------------------------------------------


def test_pinned_lists_the_latest_version_of_pinned_models_only(
    services: Services, admin: Principal, acme: Principal
) -> None:
    registry = services.registry
    for name in ("always", "sometimes", "plain"):
        registry.publish(admin, name, scale_model())
    registry.publish(admin, "always", scale_model(3.0))
    registry.publish(acme, "theirs", scale_model())
    registry.set_deployment(admin, ModelRef(None, "always"), PINNED)
    registry.set_deployment(admin, ModelRef(None, "sometimes"), Deployment(max_queue=10))
    registry.set_deployment(
        acme, ModelRef(None, "theirs"), Deployment(min_replicas=2, max_replicas=2)
    )
    services.accounts.set_tenant_weight(admin, "acme", 4.0)

    pinned = registry.pinned()
    assert [(r.model_id, r.version) for r in pinned] == [("acme/theirs", 1), ("admin/always", 2)]
    theirs, always = pinned
    assert always.deployment == PINNED
    assert theirs.deployment.min_replicas == 2
    assert (theirs.weight, theirs.grant_id, theirs.owner_tenant_id) == (4.0, None, acme.tenant_id)
    assert registry.load_artifact(always) == registry.load_artifact(
        registry.resolve(admin, ModelRef(None, "always"))
    )


def test_pinned_is_empty_without_deployments(services: Services, admin: Principal) -> None:
    services.registry.publish(admin, "scaler", scale_model())
    assert services.registry.pinned() == []
