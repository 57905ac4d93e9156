"""One frozen, validated options object (QuotaOptions) for both clients; keywords still accepted."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from llmproxy.core import redis_from_url
from llmproxy.quota import FailurePolicy, InvalidQuotaRequest, QuotaClient, QuotaOptions, QuotaType


def test_an_options_object_and_keywords_give_the_same_client(redis_url: str, limits: Any) -> None:
    monthly = {"tokens_per_month": 5}
    options = QuotaOptions(failure_policy="closed", reservation_ttl=60, monthly_limits=monthly)
    by_object = QuotaClient(redis_from_url(redis_url), limits, options=options)
    by_keywords = QuotaClient(
        redis_from_url(redis_url), limits, failure_policy="closed", reservation_ttl=60,
        monthly_limits=monthly,
    )  # fmt: skip
    assert by_object.options == by_keywords.options == options
    assert options.failure_policy is FailurePolicy.CLOSED
    assert options.monthly_limits == {QuotaType.TOKENS_PER_MONTH: 5}
    by_object.close()
    by_keywords.close()


def test_keywords_override_an_options_object(redis_url: str, limits: Any) -> None:
    client = QuotaClient(redis_from_url(redis_url), limits, options=QuotaOptions(shadow=True), shadow=False)
    assert client.options.shadow is False
    client.close()


def test_options_are_frozen() -> None:
    options = QuotaOptions()
    with pytest.raises(pydantic.ValidationError):
        options.shadow = True  # type: ignore[misc]
    assert options.replace(shadow=True).shadow is True


def test_an_unknown_option_is_refused_by_name(redis_url: str, limits: Any) -> None:
    with pytest.raises(InvalidQuotaRequest) as err:
        QuotaClient(redis_from_url(redis_url), limits, retry_after_redis=1.0)
    assert err.value.field == "retry_after_redis"


@pytest.mark.parametrize("value", [float("nan"), -1, -0.001, float("inf"), "1", True, 10**6])
def test_a_bad_retry_redis_after_is_a_clear_error(value: Any) -> None:
    with pytest.raises(InvalidQuotaRequest) as err:
        QuotaOptions(retry_redis_after=value)
    assert err.value.field == "retry_redis_after"


@pytest.mark.parametrize(
    ("field", "value"),
    [("expected_processes", 0), ("expected_processes", True), ("expected_processes", 1.5),
     ("deny_cache_max_ttl", float("nan")), ("monthly_limits", {"tokens_per_day": 5}),
     ("monthly_limits", {"tokens_per_month": -1}), ("clock", object())],
)  # fmt: skip
def test_each_option_is_validated_and_named(field: str, value: Any) -> None:
    with pytest.raises(InvalidQuotaRequest) as err:
        QuotaOptions(**{field: value})
    assert err.value.field.startswith(field)
