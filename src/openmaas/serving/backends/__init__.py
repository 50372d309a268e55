"""Where models run. Nothing outside this package assumes how (threads, processes, Ray)."""

from __future__ import annotations

from openmaas.serving.backends.base import Backend, ModelHandle, Replica, Resources
from openmaas.serving.backends.local import LocalBackend
from openmaas.serving.backends.worker_process import WorkerProcess

__all__ = ["Backend", "LocalBackend", "ModelHandle", "Replica", "Resources", "WorkerProcess"]
