"""The shared clients every concern uses: one Redis client, one SQL engine, one price book, and the services
built on them."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from llmproxy.auth import AsyncApiKeyService
from llmproxy.core import (
    AsyncRedis,
    AsyncTenantRegistry,
    async_redis_from_url,
    create_async_engine,
    fail_fast_redis_options,
)
from llmproxy.flags import AsyncFlagsClient
from llmproxy.metering import PriceBook
from llmproxy.quota import AsyncQuotaClient
from llmproxy.ratelimit_config import AsyncRateLimitConfigService

from ._auth import GatewayAuthenticator, build_authenticator
from ._budget_alerts import BudgetAlerts
from ._flags import build_flags
from ._metering import price_book
from ._settings import GatewaySettings


@dataclass
class Backends:
    """Clients shared by the middlewares and the admin API; the app's lifespan starts and closes them."""

    redis: AsyncRedis
    engine: AsyncEngine
    tenants: AsyncTenantRegistry
    limits: AsyncRateLimitConfigService
    quota: AsyncQuotaClient
    api_keys: AsyncApiKeyService
    authenticator: GatewayAuthenticator
    flags: AsyncFlagsClient
    #: metering's prices, and quota's for spend budgets: a budget is charged what metering reports
    prices: PriceBook
    #: quota's ``on_budget_alert`` (its audit publisher is bound by GatewayAudit, built after)
    budget_alerts: BudgetAlerts

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> Backends:
        redis = async_redis_from_url(settings.redis_url, **fail_fast_redis_options(settings.redis_url))
        engine = create_async_engine(settings.database_url, **settings.database_timeouts())
        limits = AsyncRateLimitConfigService(redis, engine)
        api_keys = AsyncApiKeyService(engine, redis)
        admin_token = settings.admin_token.get_secret_value() if settings.admin_token else None
        prices = price_book(settings.metering)
        alerts = BudgetAlerts()
        quota = AsyncQuotaClient(
            redis,
            limits,
            failure_policy=settings.quota_failure_policy,
            prices=prices,
            unpriced=settings.quota_unpriced_models,
            on_budget_alert=alerts,
        )
        return cls(
            redis=redis,
            engine=engine,
            tenants=AsyncTenantRegistry(engine),
            limits=limits,
            quota=quota,
            api_keys=api_keys,
            authenticator=build_authenticator(api_keys, admin_token, settings.jwt),
            flags=build_flags(redis, engine),
            prices=prices,
            budget_alerts=alerts,
        )

    async def start(self) -> None:
        # Subscribe to limit invalidations before serving, so an admin change is seen within a second.
        await self.limits.start(wait=1.0)
        await self.flags.start()  # at most 2 s; then the last good snapshot or the defaults, with the reason

    async def aclose(self) -> None:
        if self.authenticator.jwt is not None:
            await self.authenticator.jwt.aclose()
        await self.api_keys.aclose()
        await self.limits.aclose()
        await self.flags.aclose()
        await self.redis.aclose()
        await self.engine.dispose()
