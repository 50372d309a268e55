"""The policy table, enforced over HTTP: every route x every role x own / foreign / platform.

``ROUTES`` names every management and inference route with the ``Action`` it needs (from
``openmaas.security.policy``) and whether it targets an object that can belong to another
tenant. The cases are generated from it and from ``POLICY``:

- own tenant: allowed by ``POLICY`` -> 2xx, not allowed -> 403;
- a foreign tenant's private object: 404 for every role, never 403, never 2xx (it must look
  exactly like a missing object);
- ``Action.ADMIN`` routes need a key of the platform tenant ``admin``: any key of another
  tenant gets 403; platform keys follow ``POLICY[Action.ADMIN]``.

``test_every_app_route_is_in_the_table`` fails when a route is added without an entry here.
Tenants, keys and models are built once per module; destructive routes (erasures, revoke,
rotate, unshare) act on throwaway objects made for their case.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from openmaas.app import create_app
from openmaas.bootstrap import build_services, initialize
from openmaas.security.policy import POLICY, ROLES, Action
from openmaas.settings import Settings
from tests.helpers.models import scale_model

BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
OWN, FOREIGN, PLATFORM = "a", "b", "admin"  # tenants; "c" only ever receives grants
GRANTEE = "c"
# What a missing object of each kind is called (a foreign object must answer like these).
MISSING = {
    "model": f"{FOREIGN}/absent",
    "key_id": "zzzzzzzzzzzz",
    "member": "absent-member",
    "receipt": "0" * 32,
}


@dataclass(frozen=True)
class Route:
    """One row of the table: a request and the right it needs."""

    label: str
    method: str
    template: str  # the app's path template (FastAPI's ``path_format``)
    path: str  # the concrete path; {model}, {key_id}, {receipt}, {n} ... are filled per case
    action: Action | None  # None: any valid key (or, with auth=False, no key at all)
    foreign: bool = False  # targets an object that can belong to another tenant
    json: Any = None
    content: bytes | None = None
    throwaway: str | None = None  # a fresh object the case may destroy: key/model/member/...
    auth: bool = True


_M = "/api/v1/models/{model_id}"
ROUTES: tuple[Route, ...] = (
    # -- Open Inference Protocol v2 --------------------------------------------------------
    Route("health-live", "GET", "/v2/health/live", "/v2/health/live", None, auth=False),
    Route("health-ready", "GET", "/v2/health/ready", "/v2/health/ready", None, auth=False),
    Route("server-metadata", "GET", "/v2", "/v2", None),
    Route(
        "model-metadata",
        "GET",
        "/v2/models/{model_path}",
        "/v2/models/{model}",
        Action.MODELS_READ,
        foreign=True,
    ),
    Route(
        "model-ready",
        "GET",
        "/v2/models/{model_path}",
        "/v2/models/{model}/ready",
        Action.MODELS_READ,
        foreign=True,
    ),
    Route(
        "version-metadata",
        "GET",
        "/v2/models/{model_path}",
        "/v2/models/{model}/versions/1",
        Action.MODELS_READ,
        foreign=True,
    ),
    Route(
        "infer",
        "POST",
        "/v2/models/{model_path}",
        "/v2/models/{model}/infer",
        Action.INFER,
        foreign=True,
        json=BODY,
    ),
    Route(
        "explain",
        "POST",
        "/v2/models/{model_path}",
        "/v2/models/{model}/explain",
        Action.INFER,
        foreign=True,
        json={**BODY, "parameters": {"baseline": 0}},
    ),
    Route(
        "version-infer",
        "POST",
        "/v2/models/{model_path}",
        "/v2/models/{model}/versions/1/infer",
        Action.INFER,
        foreign=True,
        json=BODY,
    ),
    # -- management: tenants and keys ------------------------------------------------------
    Route("whoami", "GET", "/api/v1/whoami", "/api/v1/whoami", None),
    Route(
        "tenant-create",
        "POST",
        "/api/v1/tenants",
        "/api/v1/tenants",
        Action.ADMIN,
        json={"name": "t{n}"},
    ),
    Route("tenant-list", "GET", "/api/v1/tenants", "/api/v1/tenants", None),
    Route(
        "tenant-weight",
        "PATCH",
        "/api/v1/tenants/{name}",
        f"/api/v1/tenants/{OWN}",
        Action.ADMIN,
        json={"weight": 2.0},
    ),
    Route(
        "key-create",
        "POST",
        "/api/v1/keys",
        "/api/v1/keys",
        Action.KEYS,
        json={"role": "viewer", "name": "k{n}"},
    ),
    Route("key-list", "GET", "/api/v1/keys", "/api/v1/keys", Action.KEYS),
    Route(
        "key-revoke",
        "DELETE",
        "/api/v1/keys/{key_id}",
        "/api/v1/keys/{key_id}",
        Action.KEYS,
        foreign=True,
        throwaway="key",
    ),
    Route(
        "key-rotate",
        "POST",
        "/api/v1/keys/{key_id}/rotate",
        "/api/v1/keys/{key_id}/rotate",
        Action.KEYS,
        foreign=True,
        json={"overlap_seconds": 0},
        throwaway="key",
    ),
    Route(
        "member-add",
        "POST",
        "/api/v1/members",
        "/api/v1/members",
        Action.KEYS,
        json={"name": "member-{n}", "role": "viewer"},
    ),
    Route("member-list", "GET", "/api/v1/members", "/api/v1/members", Action.KEYS),
    # -- management: models ----------------------------------------------------------------
    Route("model-list", "GET", "/api/v1/models", "/api/v1/models", Action.MODELS_READ),
    Route(
        "publish",
        "POST",
        f"{_M}/versions",
        "/api/v1/models/{model}/versions",
        Action.MODELS_WRITE,
        foreign=True,
        content=scale_model(),
    ),
    Route(
        "alias-set",
        "PUT",
        f"{_M}/aliases/{{alias}}",
        "/api/v1/models/{model}/aliases/prod",
        Action.MODELS_WRITE,
        foreign=True,
        json={"version": 1},
    ),
    Route("model-show", "GET", _M, "/api/v1/models/{model}", Action.MODELS_READ, foreign=True),
    Route(
        "model-update",
        "PATCH",
        _M,
        "/api/v1/models/{model}",
        Action.MODELS_WRITE,
        foreign=True,
        json={"description": "d{n}"},
    ),
    Route(
        "card-show",
        "GET",
        f"{_M}/versions/{{version}}/card",
        "/api/v1/models/{model}/versions/1/card",
        Action.MODELS_READ,
        foreign=True,
    ),
    Route("card-schema", "GET", "/api/v1/model-card-schema", "/api/v1/model-card-schema", None),
    Route(
        "deployment-show",
        "GET",
        f"{_M}/deployment",
        "/api/v1/models/{model}/deployment",
        Action.MODELS_READ,
        foreign=True,
    ),
    Route(
        "deployment-set",
        "PUT",
        f"{_M}/deployment",
        "/api/v1/models/{model}/deployment",
        Action.MODELS_WRITE,
        foreign=True,
        json={"max_queue": 64, "max_batch_size": 8},
    ),
    # -- sharing ---------------------------------------------------------------------------
    Route(
        "grant-create",
        "POST",
        f"{_M}/grants",
        "/api/v1/models/{model}/grants",
        Action.MODELS_WRITE,
        foreign=True,
        json={"tenant": GRANTEE},
    ),
    Route(
        "grant-list",
        "GET",
        f"{_M}/grants",
        "/api/v1/models/{model}/grants",
        Action.MODELS_READ,
        foreign=True,
    ),
    Route(
        "grant-delete",
        "DELETE",
        f"{_M}/grants/{{tenant}}",
        f"/api/v1/models/{{model}}/grants/{GRANTEE}",
        Action.MODELS_WRITE,
        foreign=True,
        throwaway="grant",
    ),
    # -- security: erasure, audit ----------------------------------------------------------
    Route(
        "erase-tenant",
        "POST",
        "/api/v1/erasures",
        "/api/v1/erasures",
        Action.ADMIN,
        json={"tenant": "{tenant}"},
        throwaway="tenant",
    ),
    Route(
        "erase-model",
        "POST",
        "/api/v1/erasures",
        "/api/v1/erasures",
        Action.MODELS_WRITE,
        foreign=True,
        json={"model": "{model}"},
        throwaway="model",
    ),
    Route(
        "erase-version",
        "POST",
        "/api/v1/erasures",
        "/api/v1/erasures",
        Action.MODELS_WRITE,
        foreign=True,
        json={"model": "{model}", "version": 1},
        throwaway="model",
    ),
    Route(
        "erase-key",
        "POST",
        "/api/v1/erasures",
        "/api/v1/erasures",
        Action.KEYS,
        foreign=True,
        json={"api_key": "{key_id}"},
        throwaway="key",
    ),
    Route(
        "erase-member",
        "POST",
        "/api/v1/erasures",
        "/api/v1/erasures",
        Action.KEYS,
        foreign=True,
        json={"member": "{member}"},
        throwaway="member",
    ),
    Route(
        "receipt-verify",
        "GET",
        "/api/v1/erasures/{receipt_id}",
        "/api/v1/erasures/{receipt}",
        Action.KEYS,
        foreign=True,
    ),
    Route("audit-records", "GET", "/api/v1/audit", "/api/v1/audit", Action.KEYS),
    Route("audit-verify", "GET", "/api/v1/audit/verify", "/api/v1/audit/verify", Action.ADMIN),
)


def _scopes_for(route: Route) -> list[str]:
    """own always; foreign for routes with foreign targets; platform for ADMIN routes."""
    scopes = ["own"]
    if route.foreign:
        scopes.append("foreign")
    if route.action is Action.ADMIN:
        scopes.append("platform")
    return scopes


CASES = [
    pytest.param(route, role, scope, id=f"{route.label}-{role}-{scope}")
    for route in ROUTES
    for role in ROLES
    for scope in _scopes_for(route)
]


def _expected(route: Route, role: str, scope: str) -> str:
    """What the policy table says the answer is: '2xx', '403' or '404'."""
    if scope == "foreign":
        return "404"
    if route.action is None:
        return "2xx"
    if route.action is Action.ADMIN and scope != "platform":
        return "403"  # platform administration needs a key of the platform tenant
    return "2xx" if role in POLICY[route.action] else "403"


# -- the world: tenants a (own), b (foreign, private objects), c (grantee), admin (platform) --


@dataclass
class World:
    http: TestClient
    tokens: dict[tuple[str, str], str]  # (tenant, role) -> API key
    receipts: dict[str, str]  # tenant -> an erasure receipt id of that tenant
    counter: Iterator[int]

    def headers(self, tenant: str, role: str = "owner") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[tenant, role]}"}

    def ok(
        self, method: str, path: str, tenant: str, *, json: Any = None, content: Any = None
    ) -> Any:
        """A setup request as the tenant's owner that must succeed; its JSON (if any)."""
        response = self.http.request(
            method, path, json=json, content=content, headers=self.headers(tenant)
        )
        assert response.is_success, (method, path, response.text)
        return response.json() if response.content else None


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("policy") / "data",
        demo_models=False,
        inference_threads=2,
        key_rate_per_second=10000,
        tenant_rate_per_second=10000,
    )
    services = build_services(settings)
    admin_key = initialize(services).admin_key
    assert admin_key is not None
    with TestClient(create_app(settings, services)) as http:
        built = World(http, {(PLATFORM, "owner"): admin_key}, {}, itertools.count(1))
        for tenant in (OWN, FOREIGN, GRANTEE):
            created = built.ok("POST", "/api/v1/tenants", PLATFORM, json={"name": tenant})
            built.tokens[tenant, "owner"] = created["api_key"]
        for tenant in (OWN, PLATFORM):
            for role in ROLES[1:]:
                made = built.ok("POST", "/api/v1/keys", tenant, json={"role": role})
                built.tokens[tenant, role] = made["api_key"]
        for tenant in (OWN, FOREIGN):  # a/m and b/m, both private
            built.ok("POST", f"/api/v1/models/{tenant}/m/versions", tenant, content=scale_model())
            throwaway = built.ok("POST", "/api/v1/keys", tenant, json={"role": "viewer"})
            receipt = built.ok(
                "POST", "/api/v1/erasures", tenant, json={"api_key": throwaway["key"]["key_id"]}
            )
            built.receipts[tenant] = receipt["receipt_id"]
        yield built


def _targets(world: World, route: Route, owner: str) -> dict[str, str]:
    """The values for the route's placeholders: objects of tenant ``owner``."""
    n = next(world.counter)
    values = {"n": str(n), "model": f"{owner}/m", "receipt": world.receipts.get(owner, "")}
    kind = route.throwaway
    if kind == "key":
        made = world.ok("POST", "/api/v1/keys", owner, json={"role": "viewer", "name": f"x{n}"})
        values["key_id"] = made["key"]["key_id"]
    elif kind == "model":
        values["model"] = f"{owner}/throwaway-{n}"
        world.ok("POST", f"/api/v1/models/{values['model']}/versions", owner, content=scale_model())
    elif kind == "member":
        values["member"] = f"member-x{n}"
        world.ok(
            "POST", "/api/v1/members", owner, json={"name": values["member"], "role": "viewer"}
        )
    elif kind == "grant":
        world.ok("POST", f"/api/v1/models/{owner}/m/grants", owner, json={"tenant": GRANTEE})
    elif kind == "tenant":
        values["tenant"] = f"throwaway-{n}"
        world.ok("POST", "/api/v1/tenants", PLATFORM, json={"name": values["tenant"]})
    return values


def _fill(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format_map(values)
    if isinstance(value, dict):
        return {k: _fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, values) for v in value]
    return value


def _call(
    world: World, route: Route, tenant: str, role: str, values: dict[str, str]
) -> httpx2.Response:
    headers = world.headers(tenant, role) if route.auth else {}
    return world.http.request(
        route.method,
        route.path.format_map(values),
        json=_fill(route.json, values),
        content=route.content,
        headers=headers,
    )


def _shown(response: httpx2.Response) -> str:
    body = response.json() if response.content else {}
    code = body.get("code", "") if isinstance(body, dict) else ""
    return f"{response.status_code} {code}".strip()


@pytest.mark.parametrize(("route", "role", "scope"), CASES)
def test_policy(world: World, route: Route, role: str, scope: str) -> None:
    expected = _expected(route, role, scope)
    owner = FOREIGN if scope == "foreign" else PLATFORM if scope == "platform" else OWN
    caller = PLATFORM if scope == "platform" else OWN
    values = _targets(world, route, owner)
    response = _call(world, route, caller, role, values)
    case = f"{route.method} {route.path.format_map(values)} as {caller}/{role}"
    if expected == "2xx":
        assert response.is_success, f"{case}: {response.text}"
    elif expected == "403":
        assert response.status_code == 403, f"{case}: {response.text}"
        assert response.json()["code"] == "permission_denied"
    else:
        # A foreign private object must answer exactly like a missing one: 404.
        missing = _call(world, route, caller, role, {**values, **MISSING})
        assert response.status_code == 404, (
            f"{case} answered {_shown(response)} (a missing object answers "
            f"{_shown(missing)}): {response.text}"
        )
        assert missing.status_code == 404, f"{case} on a missing object: {missing.text}"


# -- the table covers the app ------------------------------------------------------------------


def _app_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path template) of every /api/v1 and /v2 route the app serves."""
    found = set()
    for route in iter_route_contexts(app.routes):
        path, methods = route.path_format, route.methods or set()
        if path and (path == "/v2" or path.startswith(("/v2/", "/api/v1/"))):
            found |= {(method, path) for method in methods if method != "HEAD"}
    return found


def test_every_app_route_is_in_the_table(world: World) -> None:
    app = world.http.app
    assert isinstance(app, FastAPI)
    served = _app_routes(app)
    table = {(route.method, route.template) for route in ROUTES}
    assert len(served) >= 20  # the enumeration itself works (FastAPI nests included routers)
    assert served - table == set(), "routes without a policy entry in ROUTES"
    assert table - served == set(), "entries in ROUTES for routes the app does not serve"


def test_the_table_exercises_every_action_and_role() -> None:
    assert {route.action for route in ROUTES} >= set(Action)
    assert set(POLICY) == set(Action)
    assert all(POLICY[action] <= set(ROLES) for action in Action)
    assert len({route.label for route in ROUTES}) == len(ROUTES)
