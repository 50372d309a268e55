"""The registry: which models exist, their versions, aliases, signatures and cards."""

from __future__ import annotations

from openmaas.registry.service import (
    VISIBILITIES,
    ModelDetail,
    ModelRef,
    ModelSummary,
    Registry,
    ResolvedVersion,
    VersionInfo,
)

__all__ = [
    "VISIBILITIES",
    "ModelDetail",
    "ModelRef",
    "ModelSummary",
    "Registry",
    "ResolvedVersion",
    "VersionInfo",
]
