"""Where models run. Nothing outside this package assumes how (threads, processes, Ray)."""

from __future__ import annotations

from openmaas.serving.backends.base import Backend, ModelHandle
from openmaas.serving.backends.threads import ThreadBackend

__all__ = ["Backend", "ModelHandle", "ThreadBackend"]
