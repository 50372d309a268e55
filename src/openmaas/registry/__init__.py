"""The registry: which models exist, their versions, aliases, signatures and cards."""

from __future__ import annotations

from openmaas.registry.refs import ModelRef
from openmaas.registry.service import (
    VISIBILITIES,
    ModelDetail,
    ModelSummary,
    Registry,
    ResolvedVersion,
    VersionInfo,
)
from openmaas.registry.sharing import GrantInfo, Sharing

__all__ = [
    "VISIBILITIES",
    "GrantInfo",
    "ModelDetail",
    "ModelRef",
    "ModelSummary",
    "Registry",
    "ResolvedVersion",
    "Sharing",
    "VersionInfo",
]
