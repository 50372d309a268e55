"""Quotas: per-key and per-tenant rate limits, per-grant daily quotas, usage counters."""

from __future__ import annotations

from openmaas.quotas.admission import Admission
from openmaas.quotas.ratelimit import RateLimiter, TokenBucket
from openmaas.quotas.usage import UsageMeter

__all__ = ["Admission", "RateLimiter", "TokenBucket", "UsageMeter"]
