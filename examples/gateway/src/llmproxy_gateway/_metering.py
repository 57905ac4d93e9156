"""Metering in the gateway: the client every request records through (its middleware's), and the flusher.

Recording shares the gateway's Redis client and so its write-behind: a request's metering record leaves in the
same pipeline as its quota settle (no round trip of its own). The flusher runs in the gateway process by
default (the embedded demo needs no second process); set ``LLMPROXY_METERING_FLUSH_IN_PROCESS=false`` and run
``llmproxy-metering flush`` next to the gateways instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmproxy.metering import (
    AsyncFlusher,
    AsyncMeteringClient,
    AsyncPriceOverrides,
    MeteringOptions,
    PriceBook,
)

from ._settings import MeteringSettings

if TYPE_CHECKING:  # (Backends builds the price book with price_book: imported at run time there)
    from ._backends import Backends

logger = logging.getLogger("llmproxy_gateway")


def price_book(settings: MeteringSettings) -> PriceBook:
    """The process's one price book: metering prices usage events with it, quota's spend budgets estimate
    and settle requests with it (so a budget is charged what metering reports), and the price overrides
    loaded by the metering client land in it for both."""
    if not settings.price_catalog:
        return PriceBook()
    try:
        from llmproxy.metering import GenaiPricesCatalog

        return PriceBook(GenaiPricesCatalog())
    except ImportError:
        logger.warning("genai-prices is not installed: only price overrides are used")
        return PriceBook()


@dataclass
class GatewayMetering:
    client: AsyncMeteringClient
    overrides: AsyncPriceOverrides
    flusher: AsyncFlusher | None

    @classmethod
    def from_backends(cls, backends: Backends, settings: MeteringSettings | None = None) -> GatewayMetering:
        settings = settings or MeteringSettings()
        options = MeteringOptions(flush_interval=settings.flush_interval)
        client = AsyncMeteringClient(
            backends.redis, engine=backends.engine, options=options, prices=backends.prices
        )
        flusher = (
            AsyncFlusher(backends.redis, backends.engine, options=options)
            if settings.flush_in_process
            else None
        )
        return cls(client=client, overrides=AsyncPriceOverrides(backends.engine), flusher=flusher)

    async def start(self) -> None:
        try:
            await self.client.start()  # the price overrides, before the first request is priced
        except Exception as exc:  # a database down at start must not keep the gateway down
            logger.warning("price overrides not loaded at start: %s: %s", type(exc).__name__, exc)
        if self.flusher is not None:
            self.flusher.start()

    async def aclose(self) -> None:
        await self.client.aclose()
        if self.flusher is not None:
            await self.flusher.stop(final_flush=True)
