"""Model runtimes: one module per artifact format behind the ``Runtime`` protocol.

Runtimes import no HTTP and no database: they turn artifact bytes into something that maps
named numpy arrays to named numpy arrays.
"""

from __future__ import annotations

from openmaas.runtimes.base import (
    FORMATS,
    PreparedArtifact,
    Runtime,
    Signature,
    TensorSpec,
    load_runtime,
    prepare_artifact,
)
from openmaas.runtimes.datatypes import DATATYPES, numpy_dtype

__all__ = [
    "DATATYPES",
    "FORMATS",
    "PreparedArtifact",
    "Runtime",
    "Signature",
    "TensorSpec",
    "load_runtime",
    "numpy_dtype",
    "prepare_artifact",
]
