"""Two gateway processes sharing real Redis + PostgreSQL: admin changes reach both within a second."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from llmproxy.core.testing import Backend

from .conftest import GatewayProcess, start_gateway

pytestmark = [pytest.mark.real, pytest.mark.slow]

HELLO = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello!"}]}
PROPAGATION_DEADLINE = 1.0


@pytest.fixture
def two_gateways(real_backend: Backend, tmp_path: Path) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    first = start_gateway(
        tmp_path, redis_url=real_backend.redis_url, database_url=real_backend.database_url, name="gw1"
    )
    second = start_gateway(
        tmp_path,
        redis_url=real_backend.redis_url,
        database_url=real_backend.database_url,
        name="gw2",
        admin_token=first.admin_token,
    )
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()


def chat_status(gw: GatewayProcess, key: str) -> int:
    headers = {"authorization": f"Bearer {key}"}
    return httpx.post(
        f"{gw.base_url}/v1/chat/completions", json=HELLO, headers=headers, timeout=5
    ).status_code


def seconds_until(condition: Callable[[], bool], deadline: float) -> float | None:
    """Poll ``condition`` until it holds; the seconds it took, or None when ``deadline`` passed first."""
    started = time.monotonic()
    while time.monotonic() - started <= deadline:
        if condition():
            return time.monotonic() - started
        time.sleep(0.02)
    return None


def test_a_limit_lowered_on_one_process_is_obeyed_by_both_within_a_second(
    two_gateways: tuple[GatewayProcess, GatewayProcess],
) -> None:
    gw1, gw2 = two_gateways
    gw1.provision("shared")
    # Both processes serve (and cache) the tenant's default limits.
    assert chat_status(gw1, gw1.api_key) == 200
    assert chat_status(gw2, gw1.api_key) == 200
    limits = {
        "global_limit": {
            "requests_per_minute": 1,
            "requests_per_day": 1000,
            "tokens_per_minute": 100_000,
            "tokens_per_day": 1_000_000,
        },
        "api_key_limit": {"requests_per_minute": 100, "tokens_per_minute": 100_000},
    }
    assert gw1.admin("PUT", f"/tenants/{gw1.tenant_id}/rate-limits", json=limits).status_code == 200
    assert seconds_until(lambda: chat_status(gw2, gw1.api_key) == 429, PROPAGATION_DEADLINE) is not None
    # From here both processes enforce 1 request/minute together. GCRA may still hold the one request the new
    # limit allows (the old limit's charges drain in milliseconds), never more: a process still on the old
    # limit would admit several.
    statuses = [chat_status(gw, gw1.api_key) for gw in (gw1, gw2, gw1, gw2, gw1, gw2)]
    assert statuses.count(200) <= 1, statuses
    assert statuses[-2:] == [429, 429], statuses
    seen_by_gw2 = gw2.admin("GET", f"/tenants/{gw1.tenant_id}/rate-limits").json()
    assert seen_by_gw2["global_limit"]["requests_per_minute"] == 1


def test_a_key_revoked_on_one_process_is_refused_by_both_within_a_second(
    two_gateways: tuple[GatewayProcess, GatewayProcess],
) -> None:
    gw1, gw2 = two_gateways
    gw1.provision("revoking")
    key_id, key = gw1.issue_key(gw1.tenant_id, "doomed")
    # Both processes have verified (and cached) the key.
    assert chat_status(gw1, key) == 200
    assert chat_status(gw2, key) == 200
    assert gw1.admin("DELETE", f"/tenants/{gw1.tenant_id}/api-keys/{key_id}").status_code == 204
    assert seconds_until(lambda: chat_status(gw2, key) == 401, PROPAGATION_DEADLINE) is not None
    assert chat_status(gw1, key) == 401
    # The tenant's other key is untouched.
    assert chat_status(gw2, gw1.api_key) == 200


def test_a_deleted_tenants_key_is_refused_by_both_within_a_second(
    two_gateways: tuple[GatewayProcess, GatewayProcess],
) -> None:
    gw1, gw2 = two_gateways
    gw1.provision("survivor")
    doomed = gw1.create_tenant(f"deleted-{time.monotonic_ns()}")
    _, key = gw1.issue_key(doomed, "doomed")
    # Both processes have verified (and cached) the key.
    assert chat_status(gw1, key) == 200
    assert chat_status(gw2, key) == 200
    assert gw1.admin("DELETE", f"/tenants/{doomed}").status_code == 204
    assert seconds_until(lambda: chat_status(gw2, key) == 401, PROPAGATION_DEADLINE) is not None
    assert chat_status(gw1, key) == 401
    # Another tenant's key is untouched.
    assert chat_status(gw2, gw1.api_key) == 200
