"""``/healthz``: the state of each backend, checked concurrently, each within a second.

- **database** (PostgreSQL or SQLite): ``SELECT 1``. Required: API keys, tenants and the admin API live there.
- **redis**: ``PING``. Required only with ``LLMPROXY_QUOTA_FAILURE_POLICY=closed``; otherwise quota admits (or
  limits locally) without it, so a Redis outage makes the gateway ``degraded``, not unavailable.
- **broker** (only when audit events travel over RabbitMQ): a TCP connection to the broker. Optional: the
  publisher keeps events in its bounded queue while the broker is away.

The answer is 200 ``{"status": "ok" | "degraded", "backends": {...}}`` while every required backend answers,
503 ``"unavailable"`` when one does not — a load balancer takes such a process out of rotation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import text

from ._backends import Backends
from ._settings import GatewaySettings

#: Seconds each check may take before the backend counts as down.
CHECK_TIMEOUT = 1.0


@dataclass(frozen=True)
class Check:
    name: str
    required: bool
    probe: Callable[[], Awaitable[Any]]


def _broker_address(url: str) -> tuple[str, int] | None:
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "amqps"):
        return None
    return parts.hostname or "localhost", parts.port or (5671 if parts.scheme == "amqps" else 5672)


def checks(settings: GatewaySettings, backends: Backends, audit_transport_url: str) -> list[Check]:
    async def database() -> None:
        async with backends.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def redis() -> None:
        await backends.redis.ping()

    found = [
        Check("database", True, database),
        Check("redis", settings.quota_failure_policy == "closed", redis),
    ]
    broker = _broker_address(audit_transport_url)
    if broker is not None:

        async def amqp() -> None:
            _reader, writer = await asyncio.open_connection(*broker)
            writer.close()
            await writer.wait_closed()

        found.append(Check("broker", False, amqp))
    return found


async def _run(check: Check) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(check.probe(), CHECK_TIMEOUT)
    except Exception as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        return {"status": "down", "required": check.required, "error": reason[:200]}
    elapsed = round((time.perf_counter() - started) * 1000, 2)
    return {"status": "ok", "required": check.required, "latency_ms": elapsed}


async def health(found: list[Check]) -> tuple[int, dict[str, Any]]:
    """``(status code, body)`` for ``/healthz``."""
    results = await asyncio.gather(*(_run(check) for check in found))
    backends = {check.name: result for check, result in zip(found, results, strict=True)}
    down = [result for result in results if result["status"] != "ok"]
    if any(result["required"] for result in down):
        return 503, {"status": "unavailable", "backends": backends}
    return 200, {"status": "degraded" if down else "ok", "backends": backends}
