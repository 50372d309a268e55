"""Admit or refuse one request: key and tenant rate limits, then the grant's daily quota."""

from __future__ import annotations

from openmaas.errors import QuotaExceededError, RateLimitedError
from openmaas.quotas.ratelimit import RateLimiter
from openmaas.quotas.usage import UsageMeter, seconds_until_tomorrow
from openmaas.security.policy import Principal

__all__ = ["Admission"]


class Admission:
    """The quota checks in front of every inference."""

    def __init__(
        self,
        keys: RateLimiter,
        tenants: RateLimiter,
        meter: UsageMeter,
        grants: RateLimiter | None = None,
        key_daily_quota: int | None = None,
        tenant_daily_quota: int | None = None,
    ) -> None:
        self._keys = keys
        self._tenants = tenants
        self._grants = grants
        self._meter = meter
        self._key_daily = key_daily_quota
        self._tenant_daily = tenant_daily_quota

    def _exhausted(self, what: str, limit: int | None) -> QuotaExceededError:
        wait = seconds_until_tomorrow(self._meter.now())
        return QuotaExceededError(
            f"{what} has used its daily quota of {limit} requests; it resets at 00:00 UTC "
            f"(in {wait:.0f} s)",
            retry_after=wait,
        )

    def charge_daily(self, principal: Principal) -> None:
        """Count a request against the key's and the tenant's daily quotas, if set."""
        if self._key_daily is not None and not self._meter.try_consume(
            f"key:{principal.key_id}", self._key_daily
        ):
            raise self._exhausted(f"API key {principal.key_id}", self._key_daily)
        if self._tenant_daily is not None and not self._meter.try_consume(
            f"tenant:{principal.tenant_id}", self._tenant_daily
        ):
            if self._key_daily is not None:
                self._meter.refund(f"key:{principal.key_id}")  # a refused call costs nothing
            raise self._exhausted(f"tenant {principal.tenant_name!r}", self._tenant_daily)

    def check_rate(self, principal: Principal) -> None:
        """Raise RateLimitedError when the key or its tenant is over its rate."""
        wait = self._keys.take(("key", principal.key_id))
        if wait:
            raise RateLimitedError(
                f"API key {principal.key_id} is over its request rate; retry in {wait:.2f} s",
                retry_after=wait,
            )
        wait = self._tenants.take(("tenant", principal.tenant_id))
        if wait:
            raise RateLimitedError(
                f"tenant {principal.tenant_name!r} is over its request rate; retry in {wait:.2f} s",
                retry_after=wait,
            )

    def charge_grant(self, grant_id: int | None, quota_per_day: int | None, model: str) -> None:
        """Count a call made through a grant; raise QuotaExceededError past its daily quota."""
        if grant_id is None:
            return
        wait = self._grants.take(("grant", grant_id)) if self._grants is not None else 0.0
        if wait:
            raise RateLimitedError(
                f"the calls that {model!r} is shared with are over their rate; "
                f"retry in {wait:.2f} s",
                retry_after=wait,
            )
        if not self._meter.try_consume(f"grant:{grant_id}", quota_per_day):
            wait = seconds_until_tomorrow(self._meter.now())
            raise QuotaExceededError(
                f"the daily quota of {quota_per_day} requests that {model!r} is shared with "
                f"is used up; it resets at 00:00 UTC (in {wait:.0f} s)",
                retry_after=wait,
            )
