"""Runs in a spawned process: another gateway process verifying one API key until it is refused."""

from __future__ import annotations

import time
from typing import Any

from llmproxy.auth import ApiKeyService, InvalidApiKey


def verify_until_refused(
    redis_url: str, database_url: str, secret: str, ready: Any, results: Any, stop: Any
) -> None:
    service = ApiKeyService.from_urls(redis_url, database_url)
    try:
        service.verify(secret)
        ready.set()
        while not stop.is_set():
            try:
                service.verify(secret)
            except InvalidApiKey:
                results.put(time.time())
                return
            time.sleep(0.01)  # a request every 10 ms, as a busy gateway process would see
    finally:
        service.close()
