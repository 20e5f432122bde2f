"""What a call costs: the price table (config ``pricing:``) and the one function that applies it.

Prices are US dollars per million tokens, per model id, for input, output, cache reads and cache
writes. A model missing from the table costs 0 and is reported as not priced, never an error.
This module is the single source of truth for prices and cost; budgets build on ``cost_usd``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ModelPrice", "PriceTable", "TokenUsage", "cost_usd"]

_PER_TOKEN = 1e-6  # prices are per million tokens


class ModelPrice(BaseModel):
    """One model's list prices, USD per million tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_read: float = Field(0.0, ge=0)
    cache_write: float = Field(0.0, ge=0)


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """The tokens of one call, as the provider counted them. ``input_tokens`` excludes cache reads/writes."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


def cost_usd(model: str, usage: TokenUsage, prices: Mapping[str, ModelPrice]) -> tuple[float, bool]:
    """(cost in USD, priced): 0.0 and False when ``model`` is not in ``prices``."""
    price = prices.get(model)
    if price is None:
        return 0.0, False
    total = (usage.input_tokens * price.input + usage.output_tokens * price.output
             + usage.cache_read_tokens * price.cache_read + usage.cache_write_tokens * price.cache_write)
    return total * _PER_TOKEN, True


class PriceTable:
    """The configured prices; ``table.cost_usd(model, usage) -> (cost, priced)``."""

    __slots__ = ("prices",)

    def __init__(self, prices: Mapping[str, ModelPrice]) -> None:
        self.prices = dict(prices)

    def cost_usd(self, model: str, usage: TokenUsage) -> tuple[float, bool]:
        return cost_usd(model, usage, self.prices)

    def __contains__(self, model: object) -> bool:
        return model in self.prices
