"""A route class for paths that carry a model id with its slash (``tenant/name``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import Scope

from openmaas.api._fields import MODEL_ID
from openmaas.names import RESERVED_NAMES

__all__ = ["ModelIdPath", "ModelRoute"]

# The ``{model_id:path}`` parameter of a ModelRoute, as the schema states it.
ModelIdPath = Annotated[
    str, Path(description="`tenant/name`, or a bare `name`.", json_schema_extra=MODEL_ID)
]


class ModelRoute(APIRoute):
    """An ``APIRoute`` whose path may end in ``{model_id:path}`` without swallowing others.

    Alone, ``/models/{model_id:path}`` would also take ``/models/m/grants`` or
    ``/models/m/aliases/prod``, the paths of other routes: a method those routes do not take
    must get their 405 (with the right ``Allow``), not reach this route as model ``m/grants``.
    So such a route matches only ``name`` or ``tenant/name`` whose name is not a reserved word.
    """

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        tail = match is not Match.NONE and self.path_format.endswith("{model_id}")
        if tail and not _is_model_id(child["path_params"]["model_id"]):
            return Match.NONE, {}
        return match, child


def _is_model_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) <= 2 and parts[-1] != "" and parts[-1] not in RESERVED_NAMES
