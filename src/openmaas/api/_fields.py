"""What the API schema states about values the services check themselves.

The services keep their own checks (and their messages, which say what to do next); these
JSON Schema fragments only document the same rules, through ``json_schema_extra``, so that
clients and generated tests know them. ``tests/api/test_schemathesis.py`` holds the two
together: schema-valid values must be accepted and schema-invalid ones refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from openmaas.names import NAME_PATTERN, RESERVED_NAMES
from openmaas.registry import VISIBILITIES
from openmaas.runtimes import FORMATS
from openmaas.security import ROLES, Action
from openmaas.serving.deployment import ISOLATIONS
from openmaas.weights import MAX_WEIGHT

__all__ = [
    "ALIAS",
    "DEPLOYMENT",
    "FORMAT",
    "MAX_SAFE_INTEGER",
    "MEMBER_NAME",
    "MODEL_ID",
    "MODEL_REF",
    "NAME",
    "ROLE",
    "SCOPES",
    "VISIBILITY",
    "WEIGHT",
    "one_of",
    "query",
]

# The largest integer every JSON client reads exactly (JavaScript's MAX_SAFE_INTEGER); well
# below what a database column stores (past 2**63 - 1 a query fails: an OverflowError, a 500).
MAX_SAFE_INTEGER = 2**53 - 1

_RESERVED: dict[str, Any] = {"enum": sorted(RESERVED_NAMES)}

# A tenant or model name (see openmaas.names).
NAME: dict[str, Any] = {"pattern": NAME_PATTERN, "not": _RESERVED}
# An alias is a name that is not all digits (a number always means a version).
ALIAS: dict[str, Any] = {
    "pattern": NAME_PATTERN,
    "not": {"anyOf": [_RESERVED, {"pattern": "^[0-9]+$"}]},
}
# A model reference: "tenant/name" or a bare "name" (see ModelRef.parse).
MODEL_REF: dict[str, Any] = {"pattern": "^([^/]*/)?[^/]+$"}
# The same in a path, where a reserved last word names another route (see _routes.ModelRoute).
MODEL_ID: dict[str, Any] = {
    **MODEL_REF,
    "not": {"pattern": f"(^|/)({'|'.join(sorted(RESERVED_NAMES))})$"},
}
ROLE: dict[str, Any] = {"enum": list(ROLES)}
SCOPES: dict[str, Any] = {"items": {"enum": [action.value for action in Action]}}
MEMBER_NAME: dict[str, Any] = {"minLength": 1, "pattern": r"\S"}  # not blank
# ``None`` stays allowed in a JSON body, where it means "leave as is"; see ``query``.
VISIBILITY: dict[str, Any] = {"enum": [*VISIBILITIES, None]}
FORMAT: dict[str, Any] = {"enum": list(FORMATS)}  # runtimes.base.prepare_artifact
WEIGHT: dict[str, Any] = {"exclusiveMinimum": 0, "maximum": MAX_WEIGHT}  # weights.check_weight
# The field rules of serving.deployment.Deployment (beside them: max_replicas >= min_replicas).
DEPLOYMENT: dict[str, dict[str, Any]] = {
    "min_replicas": {"minimum": 0},
    "max_replicas": {"minimum": 1},
    "max_batch_size": {"minimum": 1, "maximum": 4096},
    "max_queue": {"minimum": 1, "maximum": 100_000},
    "cpu": {"exclusiveMinimum": 0, "maximum": 1024},
    "memory_bytes": {"minimum": 0},
    "gpu": {"minimum": 0},
    "idle_seconds": {"minimum": 0},
    "isolation": {"enum": [*ISOLATIONS, None]},
}


def one_of(*fields: str, only_with: dict[str, str]) -> dict[str, Any]:
    """An object that sets exactly one of ``fields`` to a non-empty string.

    The others are absent, null or empty. ``only_with`` names fields allowed only beside one
    chosen field (``{"version": "model"}``).
    """
    empty = {"type": ["string", "null"], "maxLength": 0}
    branches = []
    for name in fields:
        properties: dict[str, Any] = {name: {"type": "string", "minLength": 1}}
        properties |= {other: empty for other in fields if other != name}
        properties |= {
            other: {"type": "null"} for other, owner in only_with.items() if owner != name
        }
        branches.append({"required": [name], "properties": properties})
    return {"oneOf": branches}


def query(fragment: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """``json_schema_extra`` for an optional query parameter: a string when present.

    A query string has no null (``?alias=`` is the empty string), so the ``null`` branch that
    ``str | None`` gives the schema goes; ``None`` values leave ``fragment``'s enum too.
    """

    def update(schema: dict[str, Any]) -> None:
        branches = schema.pop("anyOf", [])
        schema.update(*(b for b in branches if b.get("type") != "null"))
        schema.update(fragment)
        if "enum" in schema:
            schema["enum"] = [value for value in schema["enum"] if value is not None]

    return update
