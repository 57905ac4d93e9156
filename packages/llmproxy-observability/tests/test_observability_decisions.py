"""The request span says what auth and quota decided, read off the context, the status and x-ratelimit-*."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from observability_apps import TENANT, Authenticated
from observability_recorded import Recorded

from llmproxy.core import Receive, RequestContext, Scope, Send
from llmproxy.observability import TelemetryMiddleware
from llmproxy.observability._decisions import decisions

AUTHENTICATED = RequestContext(tenant_id=TENANT, api_key_id="k")


@pytest.mark.parametrize(
    ("ctx", "status", "headers", "expected"),
    [
        (None, 200, [], {"llmproxy.auth.outcome": "anonymous"}),
        (None, 401, [], {"llmproxy.auth.outcome": "rejected"}),
        (RequestContext(), 403, [], {"llmproxy.auth.outcome": "rejected"}),
        (
            AUTHENTICATED,
            200,
            [(b"x-ratelimit-remaining-requests", b"41"), (b"x-ratelimit-remaining-tokens", b"900")],
            {
                "llmproxy.auth.outcome": "authenticated",
                "llmproxy.quota.allowed": True,
                "llmproxy.quota.remaining_requests": 41,
                "llmproxy.quota.remaining_tokens": 900,
            },
        ),
        (
            AUTHENTICATED,
            429,
            [],
            {"llmproxy.auth.outcome": "authenticated", "llmproxy.quota.allowed": False},
        ),
        # WSGI's str pairs, any case; a value that is not a count is left out
        (
            AUTHENTICATED,
            200,
            [("X-RateLimit-Remaining-Requests", "7"), ("x-ratelimit-remaining-tokens", "-1")],
            {
                "llmproxy.auth.outcome": "authenticated",
                "llmproxy.quota.allowed": True,
                "llmproxy.quota.remaining_requests": 7,
            },
        ),
        # an authenticated 403 (a policy or a flag refused) is not an auth rejection; no quota ran
        (
            AUTHENTICATED,
            403,
            [(b"content-type", b"application/json")],
            {"llmproxy.auth.outcome": "authenticated"},
        ),
    ],
)
def test_decisions(ctx: RequestContext | None, status: int, headers: Any, expected: dict[str, Any]) -> None:
    assert decisions(ctx, status, headers) == expected


async def limited(scope: Scope, receive: Receive, send: Send) -> None:
    headers = [(b"content-type", b"text/plain"), (b"x-ratelimit-remaining-requests", b"3")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_the_request_span_carries_auth_and_quota_decisions(recorded: Recorded) -> None:
    app = TelemetryMiddleware(Authenticated(limited), telemetry=recorded.telemetry)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        assert (await http.post("/v1/chat/completions")).status_code == 200
    [span] = recorded.spans()
    assert span.attributes is not None
    assert span.attributes["llmproxy.auth.outcome"] == "authenticated"
    assert span.attributes["llmproxy.quota.allowed"] is True
    assert span.attributes["llmproxy.quota.remaining_requests"] == 3
