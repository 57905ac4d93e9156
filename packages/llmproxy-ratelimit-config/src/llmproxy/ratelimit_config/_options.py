"""``RateLimitConfigOptions``: the one declaration of the services' settings."""

from __future__ import annotations

from pydantic import Field

from llmproxy.core import SYSTEM_CLOCK, Clock, Options

from ._cache import INVALIDATION_CHANNEL, LoadHook
from ._defaults import DEFAULTS, RateLimitDefaults


class RateLimitConfigOptions(Options):
    """The settings of a ``RateLimitConfigService`` or ``AsyncRateLimitConfigService`` (frozen, validated).

    Either service takes one (``options=...``) or these names as keywords (``l1_ttl=600``); a bad value is a
    ``pydantic.ValidationError`` naming the field. Durations are finite: NaN or infinity would make an entry,
    or a fallback held during an outage, immortal.
    """

    #: what a tenant without its own row gets
    defaults: RateLimitDefaults = DEFAULTS
    #: seconds an entry lives in the per-process L1
    l1_ttl: float = Field(5.0, ge=0, allow_inf_nan=False)
    #: entries the L1 (and the last-known table) holds at most
    l1_maxsize: int = Field(10_000, ge=1)
    #: the time source of L1 expiry and of the backoffs (tests pass a ``ManualClock``)
    clock: Clock = SYSTEM_CLOCK
    #: seconds an entry lives in Redis (the version token lives twice as long)
    redis_ttl: int = Field(60, ge=1)
    #: seconds a fallback (last known value or defaults) is held in L1 while the database is unreachable
    failure_ttl: float = Field(1.0, ge=0, allow_inf_nan=False)
    #: seconds a failed backend (Redis, the database) is skipped before it is tried again
    retry_interval: float = Field(1.0, ge=0, allow_inf_nan=False)
    #: the pub/sub channel of invalidations
    channel: str = Field(INVALIDATION_CHANNEL, min_length=1)
    #: called with ``(tenant_id, source)`` on every load (a metric hook); its exceptions are logged
    on_load: LoadHook | None = None
    #: run the invalidation subscriber (started by the first ``get`` that misses L1)
    subscribe: bool = True
