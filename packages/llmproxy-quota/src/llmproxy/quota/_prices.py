"""Prices for spend budgets: what quota asks of a price table (llmproxy-metering's ``PriceBook`` is one),
and a static one. Micro-units of currency throughout: a price of ``p`` per million tokens is ``p``
micro-units per token."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Protocol

from ._results import TokenEstimate

_ONE = Decimal(1)


class TokenPrice(Protocol):
    def tokens_cost_micros(self, input_tokens: int, output_tokens: int, /) -> int: ...


class PriceSource(Protocol):
    """Where a model's price comes from (``QuotaOptions.prices``): None when the model has none."""

    def token_price(self, tenant_id: uuid.UUID, model: str, /) -> TokenPrice | None: ...


#: prices are held in units of 10^-9 micro-units per token: exact for any price of at most 9 decimals
_SCALE = 10**9


def scaled(price: Decimal) -> int | None:
    """``price`` (per million tokens) x 10^9 as an int, if that is exact (None: more than 9 decimals)."""
    value = price * _SCALE
    return int(value) if value == value.to_integral_value() else None


def round_scaled(total: int) -> int:
    """A sum of scaled prices x tokens as whole micro-units, rounded half to even (as Decimal's
    ``quantize``)."""
    q, r = divmod(total, _SCALE)
    if 2 * r > _SCALE or (2 * r == _SCALE and q & 1):
        q += 1
    return q


@dataclass(frozen=True, slots=True)
class PerMillionTokens:
    """A flat price per million input and output tokens (in currency units: ``Decimal("2.5")`` is $2.50)."""

    input: Decimal
    output: Decimal
    # integer arithmetic on the request path (Decimal's costs ~1 us per admit): see ``scaled``
    _input: int | None = field(init=False, repr=False, compare=False)
    _output: int | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_input", scaled(self.input))
        object.__setattr__(self, "_output", scaled(self.output))

    def tokens_cost_micros(self, input_tokens: int, output_tokens: int, /) -> int:
        inp, out = self._input, self._output
        if inp is not None and out is not None:  # (round_scaled, inlined: this runs on every admit)
            q, r = divmod(input_tokens * inp + output_tokens * out, _SCALE)
            if 2 * r > _SCALE or (2 * r == _SCALE and q & 1):
                q += 1
            return q
        micros = input_tokens * self.input + output_tokens * self.output
        return int(micros.quantize(_ONE, rounding=ROUND_HALF_EVEN))


class StaticPrices:
    """A fixed price per model for every tenant: ``StaticPrices({"gpt-4o": ("2.5", "10")})``."""

    def __init__(self, prices: Mapping[str, tuple[Decimal | str | int, Decimal | str | int]]) -> None:
        self._prices: dict[str, PerMillionTokens] = {}
        for model, (inp, out) in prices.items():
            self.set(model, inp, out)

    def set(
        self, model: str, input_per_mtok: Decimal | str | int, output_per_mtok: Decimal | str | int
    ) -> None:
        """Set (or change) a model's price: requests admitted from now on are estimated and settled at
        it."""
        inp, out = Decimal(input_per_mtok), Decimal(output_per_mtok)
        if not (inp.is_finite() and out.is_finite()) or inp < 0 or out < 0:
            raise ValueError(f"prices must be finite and non-negative, got {inp} and {out} for {model!r}")
        prices = dict(self._prices)
        prices[model] = PerMillionTokens(inp, out)
        self._prices = prices  # one assignment: a reader sees the old table or the new one

    def token_price(self, tenant_id: uuid.UUID, model: str, /) -> TokenPrice | None:
        return self._prices.get(model)


def estimate_cost(price: TokenPrice, tokens: int, estimate: TokenEstimate | None) -> int:
    """The spend to reserve: the estimate's split at its price; a bare token count at the dearer of the two
    prices (an upper bound: which part is output is unknown)."""
    if estimate is not None:
        return int(price.tokens_cost_micros(estimate.input_tokens, estimate.output_tokens))
    return max(int(price.tokens_cost_micros(tokens, 0)), int(price.tokens_cost_micros(0, tokens)))
