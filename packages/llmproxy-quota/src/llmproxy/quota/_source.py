"""Where limits come from: anything with ``get(tenant_id) -> TenantRateLimitConfiguration`` (sync or async),
such as ``RateLimitConfigService`` / ``AsyncRateLimitConfigService`` of llmproxy-ratelimit-config."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Mapping
from typing import Protocol

from llmproxy.ratelimit_config import DEFAULTS, RateLimitDefaults, TenantRateLimitConfiguration

from ._results import UnknownTenant


class LimitsSource(Protocol):
    def get(
        self, tenant_id: uuid.UUID, /
    ) -> TenantRateLimitConfiguration | Awaitable[TenantRateLimitConfiguration]: ...


class StaticLimits:
    """A fixed, in-process limits source: per-tenant configurations, else the defaults (or UnknownTenant)."""

    def __init__(
        self,
        configs: Mapping[uuid.UUID, TenantRateLimitConfiguration] | None = None,
        *,
        defaults: RateLimitDefaults | None = DEFAULTS,
    ) -> None:
        self._configs = dict(configs or {})
        self._defaults = defaults

    def get(self, tenant_id: uuid.UUID, /) -> TenantRateLimitConfiguration:
        config = self._configs.get(tenant_id)
        if config is not None:
            return config
        if self._defaults is None:
            raise UnknownTenant(str(tenant_id))
        config = self._configs[tenant_id] = self._defaults.for_tenant(tenant_id)
        return config

    def set(self, config: TenantRateLimitConfiguration) -> None:
        self._configs[config.tenant_id] = config
