"""Registry: versions, aliases, visibility across tenants, and validation of what is published."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from openmaas.bootstrap import Services
from openmaas.errors import (
    InvalidArtifactError,
    ModelNotFoundError,
    PermissionDeniedError,
    RequestValidationError,
    VersionNotFoundError,
)
from openmaas.registry import ModelRef, Registry
from openmaas.security import Principal
from openmaas.store import LocalBlobStore
from tests.helpers.models import identity_model, scale_model
from tests.unit.registry.conftest import role_key

SCALE_2 = scale_model(2.0)
SCALE_3 = scale_model(3.0)
MINE = ModelRef(None, "scaler")


@pytest.fixture
def registry(services: Services) -> Registry:
    return services.registry


# -- publishing and versions ------------------------------------------------------------


def test_publish_creates_version_one_then_two(registry: Registry, admin: Principal) -> None:
    first = registry.publish(admin, "scaler", SCALE_2, description="doubles")
    second = registry.publish(admin, "scaler", SCALE_3)
    assert (first.version, second.version) == (1, 2)
    assert first.model == second.model == "admin/scaler"
    assert first.format == "onnx"
    assert first.sha256 == hashlib.sha256(SCALE_2).hexdigest()
    assert first.size_bytes == len(SCALE_2)
    assert first.card["description"] == "doubles"
    assert first.signature == {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}],
    }


def test_published_artifact_is_stored_and_verified(registry: Registry, admin: Principal) -> None:
    info = registry.publish(admin, "scaler", SCALE_2)
    resolved = registry.resolve(admin, MINE)
    assert info.sha256 == hashlib.sha256(SCALE_2).hexdigest()
    assert registry.load_artifact(resolved) == SCALE_2
    assert resolved.blob_sha256 is not None
    stored = next(registry_blob_files(registry)).read_bytes()
    assert SCALE_2 not in stored  # only ciphertext reaches the disk


def test_latest_follows_the_newest_version(registry: Registry, admin: Principal) -> None:
    registry.publish(admin, "scaler", SCALE_2)
    assert registry.resolve(admin, MINE).version == 1
    registry.publish(admin, "scaler", SCALE_3)
    assert registry.resolve(admin, MINE).version == 2
    assert registry.resolve(admin, MINE, "latest").version == 2
    assert registry.resolve(admin, MINE, "latest").sha256 == hashlib.sha256(SCALE_3).hexdigest()


def test_resolve_by_number(registry: Registry, admin: Principal) -> None:
    registry.publish(admin, "scaler", SCALE_2)
    registry.publish(admin, "scaler", SCALE_3)
    resolved = registry.resolve(admin, MINE, "1")
    assert resolved.version == 1
    assert resolved.model_id == "admin/scaler"
    assert resolved.format == "onnx"
    assert resolved.sha256 == hashlib.sha256(SCALE_2).hexdigest()
    assert [s.name for s in resolved.signature.inputs] == ["x"]
    assert resolved.signature.inputs[0].shape == (-1, 4)


def test_publish_alias_moves_with_each_publish(registry: Registry, admin: Principal) -> None:
    registry.publish(admin, "scaler", SCALE_2, alias="prod")
    assert registry.resolve(admin, MINE, "prod").version == 1
    registry.publish(admin, "scaler", SCALE_3)
    assert registry.resolve(admin, MINE, "prod").version == 1
    registry.publish(admin, "scaler", SCALE_3, alias="prod")
    assert registry.resolve(admin, MINE, "prod").version == 3
    assert registry.get(admin, MINE).aliases == {"latest": 3, "prod": 3}


def test_set_alias_points_at_an_existing_version(registry: Registry, admin: Principal) -> None:
    registry.publish(admin, "scaler", SCALE_2)
    registry.publish(admin, "scaler", SCALE_3)
    detail = registry.set_alias(admin, MINE, "stable", 1)
    assert detail.aliases == {"latest": 2, "stable": 1}
    assert registry.resolve(admin, MINE, "stable").version == 1
    registry.set_alias(admin, MINE, "stable", 2)
    assert registry.resolve(admin, MINE, "stable").version == 2


def test_set_alias_to_a_missing_version(registry: Registry, admin: Principal) -> None:
    registry.publish(admin, "scaler", SCALE_2)
    with pytest.raises(VersionNotFoundError):
        registry.set_alias(admin, MINE, "stable", 9)
    assert "stable" not in registry.get(admin, MINE).aliases


def test_set_alias_rejects_invalid_alias_names(registry: Registry, admin: Principal) -> None:
    registry.publish(admin, "scaler", SCALE_2)
    for alias in ("Prod", "versions", "", "a/b"):
        with pytest.raises(RequestValidationError):
            registry.set_alias(admin, MINE, alias, 1)


def test_numeric_alias_is_refused_or_resolvable(registry: Registry, admin: Principal) -> None:
    """A version spec of digits is read as a number, so an alias '3' could never be used."""
    registry.publish(admin, "scaler", SCALE_2)
    try:
        registry.set_alias(admin, MINE, "3", 1)
    except RequestValidationError:
        return
    assert registry.resolve(admin, MINE, "3").version == 1


@pytest.mark.parametrize("spec", ["9", "0", "beta", "latest2"])
def test_unknown_version_is_not_found(registry: Registry, admin: Principal, spec: str) -> None:
    registry.publish(admin, "scaler", SCALE_2)
    with pytest.raises(VersionNotFoundError) as caught:
        registry.resolve(admin, MINE, spec)
    assert caught.value.field == "version"


@pytest.mark.parametrize("spec", ["²", "99999999999999999999"])
def test_odd_numeric_version_is_not_found(registry: Registry, admin: Principal, spec: str) -> None:
    """Unicode digits and numbers past SQLite's integer range are still just missing versions."""
    registry.publish(admin, "scaler", SCALE_2)
    with pytest.raises(VersionNotFoundError):
        registry.resolve(admin, MINE, spec)


def test_unknown_model_is_not_found(registry: Registry, admin: Principal) -> None:
    with pytest.raises(ModelNotFoundError):
        registry.resolve(admin, ModelRef(None, "nothing"))
    with pytest.raises(ModelNotFoundError):
        registry.get(admin, ModelRef("nosuchtenant", "nothing"))


def test_get_lists_versions_and_aliases(registry: Registry, admin: Principal) -> None:
    registry.publish(admin, "scaler", SCALE_2, description="v1")
    registry.publish(admin, "scaler", SCALE_3, description="v2")
    detail = registry.get(admin, MINE)
    assert detail.summary.id == "admin/scaler"
    assert detail.summary.latest_version == 2
    assert detail.summary.description == "v2"
    assert detail.summary.visibility == "private"
    assert [v.version for v in detail.versions] == [1, 2]
    assert [v.card["description"] for v in detail.versions] == ["v1", "v2"]
    assert detail.versions[0].created_at.tzinfo is not None


# -- visibility across tenants ----------------------------------------------------------


def test_foreign_private_model_looks_missing(
    registry: Registry, admin: Principal, acme: Principal
) -> None:
    registry.publish(acme, "secret", SCALE_2)
    ref = ModelRef("acme", "secret")
    with pytest.raises(ModelNotFoundError) as hidden:
        registry.resolve(admin, ref)
    with pytest.raises(ModelNotFoundError) as missing:
        registry.resolve(admin, ModelRef("acme", "absent"))
    assert type(hidden.value) is type(missing.value)
    assert hidden.value.status == missing.value.status == 404
    assert hidden.value.detail.replace("secret", "absent") == missing.value.detail
    with pytest.raises(ModelNotFoundError):
        registry.get(admin, ref)
    assert "acme/secret" not in [m.id for m in registry.list(admin)]
    assert registry.resolve(acme, ModelRef(None, "secret")).model_id == "acme/secret"


def test_public_foreign_model_is_visible_and_listed(
    registry: Registry, admin: Principal, acme: Principal
) -> None:
    registry.publish(acme, "shared", SCALE_2, visibility="public")
    registry.publish(acme, "hidden", SCALE_2)
    registry.publish(admin, "mine", SCALE_3)
    assert registry.resolve(admin, ModelRef("acme", "shared")).model_id == "acme/shared"
    assert [m.id for m in registry.list(admin)] == ["acme/shared", "admin/mine"]
    assert [m.id for m in registry.list(acme)] == ["acme/hidden", "acme/shared"]
    listed = {m.id: m for m in registry.list(admin)}
    assert listed["acme/shared"].latest_version == 1
    assert listed["acme/shared"].visibility == "public"


def test_bare_name_means_own_tenant(registry: Registry, admin: Principal, acme: Principal) -> None:
    registry.publish(acme, "shared", SCALE_2, visibility="public")
    with pytest.raises(ModelNotFoundError):
        registry.resolve(admin, ModelRef(None, "shared"))


def test_update_visibility(registry: Registry, admin: Principal, acme: Principal) -> None:
    registry.publish(acme, "model", SCALE_2)
    ref = ModelRef("acme", "model")
    with pytest.raises(ModelNotFoundError):
        registry.resolve(admin, ref)
    detail = registry.update(acme, ref, visibility="public", description="now shared")
    assert detail.summary.visibility == "public"
    assert detail.summary.description == "now shared"
    assert registry.resolve(admin, ref).version == 1
    registry.update(acme, ref, visibility="private")
    with pytest.raises(ModelNotFoundError):
        registry.resolve(admin, ref)


def test_update_rejects_unknown_visibility(registry: Registry, admin: Principal) -> None:
    registry.publish(admin, "scaler", SCALE_2)
    with pytest.raises(RequestValidationError) as caught:
        registry.update(admin, MINE, visibility="everyone")
    assert caught.value.field == "visibility"
    with pytest.raises(RequestValidationError):
        registry.publish(admin, "scaler", SCALE_2, visibility="everyone")
    assert registry.get(admin, MINE).summary.visibility == "private"


def test_publish_updates_visibility_of_an_existing_model(
    registry: Registry, admin: Principal
) -> None:
    registry.publish(admin, "scaler", SCALE_2, visibility="public")
    registry.publish(admin, "scaler", SCALE_3)
    assert registry.get(admin, MINE).summary.visibility == "public"
    registry.publish(admin, "scaler", SCALE_3, visibility="private")
    assert registry.get(admin, MINE).summary.visibility == "private"


def test_foreign_public_model_cannot_be_changed(
    registry: Registry, admin: Principal, acme: Principal
) -> None:
    registry.publish(acme, "shared", SCALE_2, visibility="public")
    ref = ModelRef("acme", "shared")
    # Visible but foreign: 403, as a right missing on a model the caller can see.
    with pytest.raises(PermissionDeniedError):
        registry.update(admin, ref, visibility="private")
    with pytest.raises(PermissionDeniedError):
        registry.set_alias(admin, ref, "mine", 1)
    assert registry.get(acme, ref).summary.visibility == "public"
    assert registry.get(acme, ref).aliases == {"latest": 1}


def test_same_name_in_two_tenants_is_two_models(
    registry: Registry, admin: Principal, acme: Principal
) -> None:
    registry.publish(admin, "scaler", SCALE_2)
    registry.publish(admin, "scaler", SCALE_2)
    assert registry.publish(acme, "scaler", SCALE_3).version == 1
    assert registry.resolve(acme, MINE).sha256 == hashlib.sha256(SCALE_3).hexdigest()
    assert registry.resolve(admin, MINE).version == 2


# -- validation and permissions ---------------------------------------------------------


@pytest.mark.parametrize(
    "data", [b"", b"not a model", SCALE_2[: len(SCALE_2) // 2]], ids=["empty", "text", "truncated"]
)
def test_invalid_artifact_is_rejected_and_nothing_is_stored(
    registry: Registry, admin: Principal, data: bytes
) -> None:
    with pytest.raises(InvalidArtifactError):
        registry.publish(admin, "broken", data)
    with pytest.raises(ModelNotFoundError):
        registry.get(admin, ModelRef(None, "broken"))


def test_unsupported_format_is_rejected(registry: Registry, admin: Principal) -> None:
    with pytest.raises(InvalidArtifactError) as caught:
        registry.publish(admin, "scaler", SCALE_2, format="pickle")
    assert caught.value.field == "format"


@pytest.mark.parametrize("name", ["versions", "infer", "ready", "Scaler", "a/b", "", "-x"])
def test_reserved_or_invalid_model_names_are_rejected(
    registry: Registry, admin: Principal, name: str
) -> None:
    with pytest.raises(RequestValidationError) as caught:
        registry.publish(admin, name, SCALE_2)
    assert caught.value.field == "name"


def test_invalid_alias_on_publish_is_rejected(registry: Registry, admin: Principal) -> None:
    with pytest.raises(RequestValidationError):
        registry.publish(admin, "scaler", SCALE_2, alias="Bad Alias")
    assert registry.list(admin) == []


@pytest.mark.parametrize("role", ["viewer", "consumer"])
def test_read_only_keys_cannot_publish(
    services: Services, registry: Registry, admin: Principal, role: str
) -> None:
    registry.publish(admin, "scaler", SCALE_2)
    reader = role_key(services, admin, role)
    with pytest.raises(PermissionDeniedError):
        registry.publish(reader, "scaler", SCALE_3)
    with pytest.raises(PermissionDeniedError):
        registry.set_alias(reader, MINE, "prod", 1)
    with pytest.raises(PermissionDeniedError):
        registry.update(reader, MINE, visibility="public")
    assert registry.resolve(reader, MINE).version == 1
    assert [m.id for m in registry.list(reader)] == ["admin/scaler"]


def test_publisher_key_can_publish(services: Services, admin: Principal) -> None:
    publisher = role_key(services, admin, "publisher")
    info = services.registry.publish(publisher, "ids", identity_model(["FP32", "BYTES"]))
    assert info.model == "admin/ids"
    assert {t["datatype"] for t in info.signature["inputs"]} == {"FP32", "BYTES"}


def test_model_ref_parse() -> None:
    assert ModelRef.parse("acme/model") == ModelRef("acme", "model")
    assert ModelRef.parse("model") == ModelRef(None, "model")
    for bad in ("a/b/c", "acme/", ""):
        with pytest.raises(RequestValidationError):
            ModelRef.parse(bad)


# -- the resolve cache ------------------------------------------------------------------


@pytest.fixture
def cached(services: Services) -> Registry:
    """A registry over the same store that remembers resolutions for a minute."""
    return Registry(
        services.db, LocalBlobStore(services.settings.blob_dir), services.keyring, cache_seconds=60
    )


def test_publish_moves_latest_at_once_despite_the_cache(cached: Registry, admin: Principal) -> None:
    cached.publish(admin, "scaler", SCALE_2)
    assert cached.resolve(admin, MINE).version == 1
    cached.publish(admin, "scaler", SCALE_3)
    assert cached.resolve(admin, MINE).version == 2


def test_set_alias_moves_at_once_despite_the_cache(cached: Registry, admin: Principal) -> None:
    cached.publish(admin, "scaler", SCALE_2, alias="prod")
    cached.publish(admin, "scaler", SCALE_3)
    assert cached.resolve(admin, MINE, "prod").version == 1
    cached.set_alias(admin, MINE, "prod", 2)
    assert cached.resolve(admin, MINE, "prod").version == 2


def test_making_a_model_private_hides_it_at_once(
    cached: Registry, admin: Principal, acme: Principal
) -> None:
    cached.publish(acme, "shared", SCALE_2, visibility="public")
    ref = ModelRef("acme", "shared")
    assert cached.resolve(admin, ref).version == 1
    cached.update(acme, ref, visibility="private")
    with pytest.raises(ModelNotFoundError):
        cached.resolve(admin, ref)


def test_cache_does_not_leak_across_tenants(
    cached: Registry, admin: Principal, acme: Principal
) -> None:
    cached.publish(admin, "scaler", SCALE_2)
    cached.publish(acme, "scaler", SCALE_3)
    assert cached.resolve(admin, MINE).model_id == "admin/scaler"
    assert cached.resolve(acme, MINE).model_id == "acme/scaler"
    with pytest.raises(ModelNotFoundError):
        cached.resolve(acme, ModelRef("admin", "scaler"))


def registry_blob_files(registry: Registry) -> Iterator[Path]:
    """The files of the registry's blob store."""
    root: Path = registry._blobs.root  # type: ignore[attr-defined]
    return (p for p in root.rglob("*") if p.is_file())
