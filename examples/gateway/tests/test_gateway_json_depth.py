"""The nesting check at the edge, and the layers below it meeting deep JSON without it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from llmproxy_gateway import GatewaySettings, create_api
from llmproxy_gateway._estimate import token_estimator
from llmproxy_gateway._json_depth import nests_deeper_than

CHAT_SCOPE = {"type": "http", "method": "POST", "path": "/v1/chat/completions"}


@pytest.mark.parametrize(
    ("body", "depth"),
    [
        (b"[]", 1),
        (b'{"a": [1, {"b": []}]}', 4),
        (b"[[], [[]], []]", 3),
        (b'["[[[[", "\\"[[[["]', 1),
        (b'{"a": "}}}}{{{{"}', 1),
        (b"[" * 200 + b"]" * 200, 200),
    ],
)
def test_nesting_is_counted_outside_strings(body: bytes, depth: int) -> None:
    assert not nests_deeper_than(body, depth)
    assert nests_deeper_than(body, depth - 1)


def test_a_body_with_few_brackets_is_not_scanned_deeper() -> None:
    assert not nests_deeper_than(b'{"messages": [{"content": "' + b"x" * 100_000 + b'"}]}', 3)


def test_the_token_estimate_of_a_body_too_deep_for_json_loads_is_zero() -> None:
    body = b'{"model": "m", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert token_estimator(256)(CHAT_SCOPE, body) == 0


async def test_fastapi_alone_answers_a_body_too_deep_for_json_loads_with_400(tmp_path: Path) -> None:
    app = create_api(GatewaySettings(database_url=f"sqlite:///{tmp_path / 'x.db'}"))
    body = b"[" * 50_000 + b"]" * 50_000
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
        response = await http.post(
            "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "code", "param"}
