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
        self._check_rate(self._keys, ("key", principal.key_id), f"API key {principal.key_id}")
        self._check_rate(
            self._tenants, ("tenant", principal.tenant_id), f"tenant {principal.tenant_name!r}"
        )
        quotas: list[tuple[str, int | None, str]] = [
            (f"key:{principal.key_id}", self._key_daily, f"API key {principal.key_id}"),
            (
                f"tenant:{principal.tenant_id}",
                self._tenant_daily,
                f"tenant {principal.tenant_name!r}",
            ),
        ]
        if grant_id is not None:
            shared = f"the share of {model!r} with this tenant"
            if self._grants is not None:
                self._check_rate(self._grants, ("grant", grant_id), shared)
            quotas.append((f"grant:{grant_id}", grant_quota_per_day, shared))
        counted = [(scope, limit) for scope, limit, _ in quotas if limit is not None]
        exhausted = self._meter.try_consume_all(counted)
        if exhausted is not None:
            scope, limit = exhausted
            what = next(label for s, _, label in quotas if s == scope)
            wait = seconds_until_tomorrow(self._meter.now())
            raise QuotaExceededError(
                f"{what} has used its daily quota of {limit} requests; it resets at "
                f"00:00 UTC (in {wait:.0f} s)",
                retry_after=wait,
            )

    @staticmethod
    def _check_rate(limiter: RateLimiter, name: tuple[str, int | str], what: str) -> None:
        wait = limiter.take(name)
        if wait:
            raise RateLimitedError(
                f"{what} is over its request rate; retry in {wait:.2f} s", retry_after=wait
            )
