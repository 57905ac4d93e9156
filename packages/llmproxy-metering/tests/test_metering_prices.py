"""Prices: the genai-prices catalog (bundled data, fast path equal to the library's own figure), overrides."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal

import genai_prices
import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from llmproxy.core import ManualClock, create_engine, redis_from_url
from llmproxy.metering import GenaiPricesCatalog, MeteringClient, PriceBook, PriceOverride, UsageEvent
from llmproxy.metering import _repository as repo
from llmproxy.metering._prices import LinearPrice

AT = datetime(2026, 6, 1, 12, tzinfo=UTC)


def event(model: str, provider: str | None = None, **tokens: int) -> UsageEvent:
    return UsageEvent(tenant_id=uuid.uuid4(), occurred_at=AT, model=model, provider=provider, **tokens)


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("gpt-4o-mini", "openai"),
        ("gpt-4o", None),
        ("claude-sonnet-4-20250514", "anthropic"),
        ("gemini-2.5-pro", "google"),
        ("o3", "openai"),
    ],
)
def test_the_catalog_cost_equals_genai_prices_own_calculation(model: str, provider: str | None) -> None:
    catalog = GenaiPricesCatalog()
    e = event(model, provider, input_tokens=123_456, cached_input_tokens=1_000, output_tokens=7_890)
    price = catalog.price(model, provider, AT)
    assert price is not None
    usage = genai_prices.Usage(input_tokens=123_456, cache_read_tokens=1_000, output_tokens=7_890)
    if provider is None:
        expected = genai_prices.calc_price(usage, model, genai_request_timestamp=AT)
    else:
        expected = genai_prices.calc_price(usage, model, provider_id=provider, genai_request_timestamp=AT)
    micros = int((expected.total_price * 1_000_000).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    assert price.cost_micros(e) == micros
    assert micros > 0


def test_an_unknown_model_has_no_catalog_price() -> None:
    catalog = GenaiPricesCatalog()
    assert catalog.price("no-such-model-anywhere", None, AT) is None
    assert PriceBook(catalog).cost_micros(event("no-such-model-anywhere")) is None


def test_a_tenant_override_wins_over_a_global_one_which_wins_over_the_catalog() -> None:
    tenant = uuid.uuid4()
    book = PriceBook(
        GenaiPricesCatalog(),
        [
            PriceOverride(model="gpt-4o", input_per_mtok=Decimal(1), output_per_mtok=Decimal(0)),
            PriceOverride(
                tenant_id=tenant, model="gpt-4o", input_per_mtok=Decimal(3), output_per_mtok=Decimal(0)
            ),
        ],
    )
    mine = UsageEvent(tenant_id=tenant, occurred_at=AT, model="gpt-4o", input_tokens=1000)
    other = UsageEvent(tenant_id=uuid.uuid4(), occurred_at=AT, model="gpt-4o", input_tokens=1000)
    assert book.cost_micros(mine) == 3000
    assert book.cost_micros(other) == 1000
    assert book.cost_micros(event("gpt-4o-mini", input_tokens=1000)) == 150  # $0.15 per million


def test_a_per_request_price_is_charged_per_request() -> None:
    book = PriceBook(
        overrides=[
            PriceOverride(
                model="m", input_per_mtok=Decimal(0), output_per_mtok=Decimal(0), per_request=Decimal("0.002")
            )
        ]
    )
    assert book.cost_micros(event("m", requests=3)) == 6000


def test_a_negative_or_absurd_price_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="input_per_mtok"):
        PriceOverride(model="m", input_per_mtok=Decimal(-1), output_per_mtok=Decimal(1))
    with pytest.raises(ValidationError, match="output_per_mtok"):
        PriceOverride(model="m", input_per_mtok=Decimal(1), output_per_mtok=Decimal("1e9"))


def test_overrides_are_stored_replaced_deleted_and_loaded_by_a_client(
    database_url: str, redis_url: str, create_tenant: Callable[[str], uuid.UUID]
) -> None:
    tenant = create_tenant(database_url)
    engine = create_engine(database_url)
    with engine.begin() as conn:
        repo.put_override(
            conn,
            PriceOverride(
                tenant_id=tenant, model="m", input_per_mtok=Decimal("1.5"), output_per_mtok=Decimal(2)
            ),
        )
        repo.put_override(
            conn,
            PriceOverride(
                tenant_id=tenant, model="m", input_per_mtok=Decimal("2.25"), output_per_mtok=Decimal(2)
            ),
        )
        repo.put_override(
            conn, PriceOverride(model="m", input_per_mtok=Decimal(9), output_per_mtok=Decimal(9))
        )
    with engine.connect() as conn:
        mine = repo.list_overrides(conn, tenant)
        assert [(o.model, o.input_per_mtok) for o in mine] == [("m", Decimal("2.25"))]
        assert len(repo.list_overrides(conn, every=True)) == 2
    client = MeteringClient(redis_from_url(redis_url), engine=engine, clock=ManualClock())
    client.start()
    e = UsageEvent(tenant_id=tenant, occurred_at=AT, model="m", input_tokens=1000)
    assert client.prices.cost_micros(e) == 2250
    with engine.begin() as conn:
        assert repo.delete_override(conn, tenant, "m") is True
        assert repo.delete_override(conn, tenant, "m") is False
    client.refresh_prices()
    assert client.prices.cost_micros(e) == 9000  # the global override now
    engine.dispose()


def test_deleting_a_tenant_deletes_its_usage_and_overrides(
    database_url: str, create_tenant: Callable[[str], uuid.UUID]
) -> None:
    from llmproxy.core import TenantRegistry
    from llmproxy.metering import usage_hourly_table

    tenant = create_tenant(database_url)
    engine = create_engine(database_url)
    with engine.begin() as conn:
        repo.upsert_hours(conn, [(tenant, 1, "m", "", "", 1, 2, 3, 0, 0, 0, 1)])
        repo.put_override(
            conn,
            PriceOverride(tenant_id=tenant, model="m", input_per_mtok=Decimal(1), output_per_mtok=Decimal(1)),
        )
    TenantRegistry(engine).delete(tenant)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(usage_hourly_table)).scalar() == 0
        assert repo.list_overrides(conn, every=True) == []
    engine.dispose()


def test_the_upsert_keeps_the_greater_value_of_each_column(
    database_url: str, create_tenant: Callable[[str], uuid.UUID]
) -> None:
    tenant = create_tenant(database_url)
    engine = create_engine(database_url)
    with engine.begin() as conn:
        repo.upsert_hours(conn, [(tenant, 5, "m", "", "", 10, 1, 50, 0, 0, 0, 0)])
        repo.upsert_hours(conn, [(tenant, 5, "m", "", "", 4, 9, 20, 0, 0, 0, 0)])
        rows = repo.usage_rows(conn, tenant, 0, 10, ())
    assert rows == [(5, "m", "", "", 10, 9, 50, 0, 0, 0, 0)]
    engine.dispose()


def test_token_price_is_what_quota_budgets_reserve_and_settle_with() -> None:
    """``PriceBook.token_price`` (llmproxy-quota's PriceSource): the override for the tenant, then the model's
    everywhere, then the catalog; the same figure as ``cost_micros`` of an equivalent event."""
    tenant = uuid.uuid4()
    book = PriceBook(
        GenaiPricesCatalog(),
        [
            PriceOverride(model="gpt-4o", input_per_mtok=Decimal("3"), output_per_mtok=Decimal("12")),
            PriceOverride(
                tenant_id=tenant, model="gpt-4o", input_per_mtok=Decimal("1"), output_per_mtok=Decimal("4")
            ),
        ],
    )
    mine, others = book.token_price(tenant, "gpt-4o"), book.token_price(uuid.uuid4(), "gpt-4o")
    assert mine is not None
    assert others is not None
    assert (mine.tokens_cost_micros(1000, 500), others.tokens_cost_micros(1000, 500)) == (3000, 9000)
    catalog = book.token_price(tenant, "gpt-4o-mini")
    assert catalog is not None
    event = UsageEvent(
        tenant_id=tenant,
        occurred_at=datetime.now(UTC),
        model="gpt-4o-mini",
        input_tokens=1000,
        output_tokens=500,
    )
    assert catalog.tokens_cost_micros(1000, 500) == book.cost_micros(event) == 450
    assert book.token_price(tenant, "no-such-model") is None


@given(
    st.decimals(min_value=0, max_value=1000, places=9),
    st.decimals(min_value=0, max_value=1000, allow_nan=False, allow_infinity=False),
    st.decimals(min_value=0, max_value=1, places=9),
    st.integers(0, 10**7),
    st.integers(0, 10**7),
)
def test_tokens_cost_is_decimals_figure(
    inp: Decimal, out: Decimal, per_request: Decimal, i: int, o: int
) -> None:
    """The integer path of ``tokens_cost_micros`` (prices of at most 9 decimals) equals Decimal's."""
    price = LinearPrice(inp, inp, out, per_request)
    want = int((i * inp + o * out + per_request * 1_000_000).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    assert price.tokens_cost_micros(i, o) == want
