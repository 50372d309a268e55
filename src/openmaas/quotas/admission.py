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

    def admit(
        self,
        principal: Principal,
        grant_id: int | None = None,
        grant_quota_per_day: int | None = None,
        model: str = "",
    ) -> None:
        """Check the rates, then count the call against every daily quota at once.

        Raises RateLimitedError or QuotaExceededError (both with ``retry_after``); a refused
        call is counted nowhere.
        """
        wait = self._keys.take(("key", principal.key_id))
        if wait:
            raise _rate_error(f"API key {principal.key_id}", wait)
        wait = self._tenants.take(("tenant", principal.tenant_id))
        if wait:
            raise _rate_error(f"tenant {principal.tenant_name!r}", wait)
        if grant_id is not None and self._grants is not None:
            wait = self._grants.take(("grant", grant_id))
            if wait:
                raise _rate_error(f"the share of {model!r} with this tenant", wait)
        counted: list[tuple[str, int]] = []
        if self._key_daily is not None:
            counted.append((f"key:{principal.key_id}", self._key_daily))
        if self._tenant_daily is not None:
            counted.append((f"tenant:{principal.tenant_id}", self._tenant_daily))
        if grant_id is not None and grant_quota_per_day is not None:
            counted.append((f"grant:{grant_id}", grant_quota_per_day))
        if not counted:
            return
        exhausted = self._meter.try_consume_all(counted)
        if exhausted is not None:
            scope, limit = exhausted
            kind = scope.partition(":")[0]
            what = {
                "key": f"API key {principal.key_id}",
                "tenant": f"tenant {principal.tenant_name!r}",
                "grant": f"the share of {model!r} with this tenant",
            }[kind]
            wait = seconds_until_tomorrow(self._meter.now())
            raise QuotaExceededError(
                f"{what} has used its daily quota of {limit} requests; it resets at "
                f"00:00 UTC (in {wait:.0f} s)",
                retry_after=wait,
            )


def _rate_error(what: str, wait: float) -> RateLimitedError:
    return RateLimitedError(
        f"{what} is over its request rate; retry in {wait:.2f} s", retry_after=wait
    )
