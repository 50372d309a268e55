"""OpenMaaS: a self-hostable Model-as-a-Service platform.

Publish trained models; the platform stores them and serves them over the Open Inference
Protocol to callers with their own API keys.
"""

from __future__ import annotations

from openmaas._version import __version__
from openmaas.client import Client

__all__ = ["Client", "__version__"]
