"""Cost of an event in integer micro-units of currency: overrides first, then the price catalog, else none.

Prices are per million tokens, so a price of ``p`` per million tokens is exactly ``p`` micro-units per token:
an event's cost is ``uncached_input * input + cached_input * cached_input_price + output * output
+ requests * per_request * 10**6``, rounded once (half to even) to whole micro-units.

An unknown model gets *no* cost (``None``): the event is counted in ``unpriced_requests``, never priced at 0.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Annotated, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from ._models import HOUR, ModelName, UsageEvent

MILLION = Decimal(1_000_000)
_ONE = Decimal(1)

PricePerMTok = Annotated[Decimal, Field(ge=0, le=1_000_000, max_digits=18, decimal_places=9)]


class PriceOverride(BaseModel):
    """A price set by the operator: for one tenant and model, or (``tenant_id`` None) for a model everywhere.

    Per million tokens (``cached_input_per_mtok`` None = the input price) plus a price per request.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant_id: uuid.UUID | None = None
    model: ModelName
    input_per_mtok: PricePerMTok
    cached_input_per_mtok: PricePerMTok | None = None
    output_per_mtok: PricePerMTok
    per_request: PricePerMTok = Decimal(0)


@dataclass(frozen=True, slots=True)
class LinearPrice:
    """A flat price (no tiers), in currency units: per million tokens, and per request."""

    input_per_mtok: Decimal
    cached_input_per_mtok: Decimal
    output_per_mtok: Decimal
    per_request: Decimal = Decimal(0)

    @classmethod
    def of(cls, override: PriceOverride) -> LinearPrice:
        cached = override.cached_input_per_mtok
        return cls(
            override.input_per_mtok,
            override.input_per_mtok if cached is None else cached,
            override.output_per_mtok,
            override.per_request,
        )

    def cost_micros(self, event: UsageEvent) -> int:
        micros = (
            (event.input_tokens - event.cached_input_tokens) * self.input_per_mtok
            + event.cached_input_tokens * self.cached_input_per_mtok
            + event.output_tokens * self.output_per_mtok
        )
        if self.per_request:
            micros += event.requests * self.per_request * MILLION
        return int(micros.quantize(_ONE, rounding=ROUND_HALF_EVEN))

    def tokens_cost_micros(self, input_tokens: int, output_tokens: int, /) -> int:
        """One request of ``input_tokens`` (uncached) and ``output_tokens``: what quota's spend budgets
        reserve and settle (llmproxy-quota's ``TokenPrice``). On every admit under a budget: prices of at most
        9 decimals (every price an override can hold) are computed in integers, the same figure as Decimal's
        half-to-even rounding."""
        scaled = _scaled(self)
        if scaled is not None:
            total = input_tokens * scaled[0] + output_tokens * scaled[1] + scaled[2]
            q, r = divmod(total, _NANO)
            if 2 * r > _NANO or (2 * r == _NANO and q & 1):
                q += 1
            return q
        micros = input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok
        if self.per_request:
            micros += self.per_request * MILLION
        return int(micros.quantize(_ONE, rounding=ROUND_HALF_EVEN))


_NANO = 10**9
_SCALED: dict[LinearPrice, tuple[int, int, int] | None] = {}


def _scaled(price: LinearPrice) -> tuple[int, int, int] | None:
    """The price's input, output and per-request figures x 10^9 as ints (None: not exact in 9 decimals)."""
    try:
        return _SCALED[price]
    except KeyError:
        pass
    parts = (price.input_per_mtok * _NANO, price.output_per_mtok * _NANO, price.per_request * MILLION * _NANO)
    exact = all(p == p.to_integral_value() for p in parts)
    found = (int(parts[0]), int(parts[1]), int(parts[2])) if exact else None
    if len(_SCALED) >= 10_000:
        _SCALED.clear()
    _SCALED[price] = found
    return found


class Price(Protocol):
    def cost_micros(self, event: UsageEvent) -> int: ...
    def tokens_cost_micros(self, input_tokens: int, output_tokens: int, /) -> int: ...


class PriceCatalog(Protocol):
    """Where prices of models come from when no override names them."""

    def price(self, model: str, provider: str | None, at: datetime) -> Price | None: ...


class _TieredPrice:
    """A catalog price with tiers: computed by genai-prices itself (slower, but exact)."""

    __slots__ = ("_model_price", "_usage")

    def __init__(self, model_price: Any, usage_type: Any) -> None:
        self._model_price = model_price
        self._usage = usage_type

    def cost_micros(self, event: UsageEvent) -> int:
        usage = self._usage(
            input_tokens=event.input_tokens,
            cache_read_tokens=event.cached_input_tokens,
            output_tokens=event.output_tokens,
        )
        total = Decimal(self._model_price.calc_price(usage)["total_price"])
        if event.requests != 1:  # genai-prices prices one request; tokens are this event's totals
            per_request = _decimal(getattr(self._model_price, "requests_kcount", None)) / 1000
            total += (event.requests - 1) * per_request
        return int((total * MILLION).quantize(_ONE, rounding=ROUND_HALF_EVEN))

    def tokens_cost_micros(self, input_tokens: int, output_tokens: int, /) -> int:
        usage = self._usage(input_tokens=input_tokens, output_tokens=output_tokens)
        total = Decimal(self._model_price.calc_price(usage)["total_price"])
        return int((total * MILLION).quantize(_ONE, rounding=ROUND_HALF_EVEN))


def _decimal(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(0)


class GenaiPricesCatalog:
    """Prices from ``genai-prices``' bundled data (the ``[prices]`` extra). Never fetches anything: the
    package's auto-update (``UpdatePrices``) is not used, so prices change only with its version.

    Lookups are cached per (provider, model, UTC hour), so the request path pays for a dictionary lookup.
    """

    def __init__(self, *, max_cached: int = 10_000) -> None:
        try:
            import genai_prices
            from genai_prices import data_snapshot
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "the price catalog needs genai-prices: pip install 'llmproxy-metering[prices]'"
            ) from exc
        self._usage_type = genai_prices.Usage
        self._snapshot = data_snapshot.get_snapshot
        # Load the bundled data now (about half a second): lazily, the first request priced would pay it,
        # blocking its event loop.
        self._snapshot()
        self._cache: dict[tuple[str | None, str, int], Price | None] = {}
        self._max_cached = max_cached
        self._lock = threading.Lock()

    def price(self, model: str, provider: str | None, at: datetime) -> Price | None:
        key = (provider, model, int(at.timestamp()) // HOUR)
        try:
            return self._cache[key]
        except KeyError:
            pass
        found = self._lookup(model, provider, at)
        with self._lock:
            if len(self._cache) >= self._max_cached:
                self._cache.clear()
            self._cache[key] = found
        return found

    def _lookup(self, model: str, provider: str | None, at: datetime) -> Price | None:
        try:
            _provider, info = self._snapshot().find_provider_model(model, None, provider, None)
        except LookupError:
            return None
        model_price = info.get_prices(at)
        parts = {
            name: getattr(model_price, name, None)
            for name in ("input_mtok", "cache_read_mtok", "output_mtok", "requests_kcount")
        }
        if any(value is not None and not isinstance(value, Decimal) for value in parts.values()):
            return _TieredPrice(model_price, self._usage_type)
        input_price = _decimal(parts["input_mtok"])
        cached = parts["cache_read_mtok"]
        return LinearPrice(
            input_price,
            cached if isinstance(cached, Decimal) else input_price,
            _decimal(parts["output_mtok"]),
            _decimal(parts["requests_kcount"]) / 1000,
        )


class PriceBook:
    """The prices one process uses: a snapshot of the overrides (replaced whole by :meth:`replace`, loaded
    from PostgreSQL in the background) in front of an optional catalog."""

    def __init__(self, catalog: PriceCatalog | None = None, overrides: Iterable[PriceOverride] = ()) -> None:
        self.catalog = catalog
        self._overrides: Mapping[tuple[uuid.UUID | None, str], LinearPrice] = {}
        self.replace(overrides)

    def replace(self, overrides: Iterable[PriceOverride]) -> None:
        # One assignment: readers on other threads see the old snapshot or the new one, never a mix.
        self._overrides = {(o.tenant_id, o.model): LinearPrice.of(o) for o in overrides}

    @property
    def overrides(self) -> int:
        return len(self._overrides)

    def price_of(self, event: UsageEvent) -> Price | None:
        model = event.model
        if model is None:
            return None
        overrides = self._overrides
        price = overrides.get((event.tenant_id, model)) or overrides.get((None, model))
        if price is not None:
            return price
        if self.catalog is None:
            return None
        return self.catalog.price(model, event.provider, event.occurred_at)

    def token_price(
        self, tenant_id: uuid.UUID, model: str, /, provider: str | None = None, at: datetime | None = None
    ) -> Price | None:
        """The price of ``model`` for ``tenant_id`` now (or ``at``): what llmproxy-quota's spend budgets
        estimate and settle requests with (its ``PriceSource``). None: the model has no price."""
        overrides = self._overrides
        price = overrides.get((tenant_id, model)) or overrides.get((None, model))
        if price is not None:
            return price
        if self.catalog is None:
            return None
        return self.catalog.price(model, provider, at or datetime.now(UTC))

    def cost_micros(self, event: UsageEvent) -> int | None:
        """The event's cost, or None when no price is known for its model."""
        price = self.price_of(event)
        return None if price is None else price.cost_micros(event)
