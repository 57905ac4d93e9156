"""RateLimitConfigOptions: one frozen, validated declaration of the services' settings."""

from __future__ import annotations

import math
import uuid

import pydantic
import pytest

from llmproxy.core import ManualClock, create_engine, redis_from_url
from llmproxy.core.testing import Backend
from llmproxy.ratelimit_config import (
    DEFAULTS,
    INVALIDATION_CHANNEL,
    ApiKeyLimit,
    AsyncRateLimitConfigService,
    RateLimitConfigOptions,
    RateLimitConfigService,
    RateLimitDefaults,
)


def test_the_defaults_are_the_documented_ones() -> None:
    options = RateLimitConfigOptions()

    assert (options.l1_ttl, options.l1_maxsize, options.redis_ttl) == (5.0, 10_000, 60)
    assert (options.failure_ttl, options.retry_interval) == (1.0, 1.0)
    assert options.channel == INVALIDATION_CHANNEL
    assert options.defaults == DEFAULTS
    assert options.on_load is None
    assert options.subscribe is True


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("l1_ttl", -1),
        ("l1_ttl", math.nan),
        ("failure_ttl", math.inf),
        ("retry_interval", -0.5),
        ("l1_maxsize", 0),
        ("redis_ttl", 0),
        ("channel", ""),
        ("clock", object()),
        ("defaults", {"global_limit": "lots"}),
        ("on_load", "not callable"),
    ],
)
def test_a_bad_value_is_refused_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(pydantic.ValidationError, match=field):
        RateLimitConfigOptions(**{field: value})  # type: ignore[arg-type]


def test_an_unknown_name_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match="l1_tll"):
        RateLimitConfigOptions(l1_tll=3)  # type: ignore[call-arg]


def test_options_are_frozen() -> None:
    options = RateLimitConfigOptions()

    with pytest.raises(pydantic.ValidationError, match="frozen"):
        options.l1_ttl = 1  # type: ignore[misc]


def test_the_service_takes_an_options_object_or_its_names_as_keywords(backend: Backend) -> None:
    clock = ManualClock()
    defaults = RateLimitDefaults(api_key_limit=ApiKeyLimit(requests_per_minute=1, tokens_per_minute=1))
    redis, engine = redis_from_url(backend.redis_url), create_engine(backend.database_url)
    try:
        by_object = RateLimitConfigService(
            redis, engine, options=RateLimitConfigOptions(l1_ttl=600, clock=clock, subscribe=False)
        )
        by_names = RateLimitConfigService(redis, engine, l1_ttl=600, clock=clock, subscribe=False)
        both = RateLimitConfigService(
            redis, engine, options=by_object.options, l1_maxsize=7, defaults=defaults
        )

        assert by_object.options == by_names.options
        assert (both.options.l1_ttl, both.options.l1_maxsize, both.options.clock) == (600, 7, clock)
        assert both.defaults == defaults != DEFAULTS
    finally:
        redis.close()
        engine.dispose()


def test_the_service_refuses_a_bad_keyword_naming_it(backend: Backend) -> None:
    redis, engine = redis_from_url(backend.redis_url), create_engine(backend.database_url)
    try:
        with pytest.raises(pydantic.ValidationError, match="redis_ttl"):
            RateLimitConfigService(redis, engine, redis_ttl=-5)
        with pytest.raises(pydantic.ValidationError, match="l1_tll"):
            RateLimitConfigService(redis, engine, l1_tll=600)
    finally:
        redis.close()
        engine.dispose()


def test_from_urls_validates_the_options(backend: Backend) -> None:
    with pytest.raises(pydantic.ValidationError, match="failure_ttl"):
        RateLimitConfigService.from_urls(backend.redis_url, backend.database_url, failure_ttl=-1)
    with pytest.raises(pydantic.ValidationError, match="l1_maxsize"):
        AsyncRateLimitConfigService.from_urls(backend.redis_url, backend.database_url, l1_maxsize=0)


async def test_the_async_service_takes_the_same_options(backend: Backend) -> None:
    options = RateLimitConfigOptions(l1_ttl=600, subscribe=False)

    async with AsyncRateLimitConfigService.from_urls(
        backend.redis_url, backend.database_url, options=options, l1_maxsize=3
    ) as service:
        assert service.options == options.replace(l1_maxsize=3)
        assert (await service.get_with_source(uuid.uuid4())).source == "default"
