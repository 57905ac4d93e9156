"""Bad input gets a 4xx OpenAI-style error that names the problem — never a 500, never a traceback."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from .conftest import GatewayProcess

CHAT = "/v1/chat/completions"


def post(gw: GatewayProcess, path: str, content: bytes, **headers: str) -> httpx.Response:
    all_headers = {"authorization": f"Bearer {gw.api_key}", "content-type": "application/json", **headers}
    return httpx.post(f"{gw.base_url}{path}", content=content, headers=all_headers, timeout=10)


def error_of(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body["error"]) == {"message", "type", "code", "param"}
    error: dict[str, Any] = body["error"]
    return error


def test_malformed_json_is_400_invalid_json(gateway: GatewayProcess) -> None:
    response = post(gateway, CHAT, b'{"model": "gpt-4o-mini", "messages": [')
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_json"
    assert "not valid JSON" in error["message"]


def test_empty_body_is_400(gateway: GatewayProcess) -> None:
    response = post(gateway, CHAT, b"")
    assert response.status_code == 400
    assert error_of(response)["type"] == "invalid_request_error"


def test_a_json_array_instead_of_an_object_is_400(gateway: GatewayProcess) -> None:
    assert post(gateway, CHAT, b"[1, 2]").status_code == 400


HI = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": HI}, "model"),
        ({"model": "gpt-4o-mini"}, "messages"),
        ({"model": "gpt-4o-mini", "messages": []}, "messages"),
        ({"model": "gpt-4o-mini", "messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
        ({"model": 42, "messages": HI}, "model"),
        ({"model": "gpt-4o-mini\u0000", "messages": HI}, "model"),
        ({"model": "gpt-4o\nmini", "messages": HI}, "model"),
        ({"model": "gpt-4o-mini", "messages": HI, "max_tokens": "many"}, "max_tokens"),
        ({"model": "gpt-4o-mini", "messages": HI, "max_tokens": 0}, "max_tokens"),
        ({"model": "gpt-4o-mini", "messages": HI, "temperature": 9}, "temperature"),
        ({"model": "gpt-4o-mini", "messages": HI, "stream": "yes"}, "stream"),
    ],
)
def test_wrong_fields_are_400_naming_the_field(
    gateway: GatewayProcess, body: dict[str, Any], param: str
) -> None:
    response = post(gateway, CHAT, json.dumps(body).encode())
    assert response.status_code == 400
    error = error_of(response)
    assert error["param"] == param
    assert param in error["message"]


def test_stream_options_without_stream_is_400(gateway: GatewayProcess) -> None:
    body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream_options": {}}'
    response = post(gateway, CHAT, body)
    assert response.status_code == 400
    assert "stream_options" in error_of(response)["message"]


def test_embeddings_with_a_wrong_input_type_is_400(gateway: GatewayProcess) -> None:
    response = post(gateway, "/v1/embeddings", b'{"model": "text-embedding-3-small", "input": {"a": 1}}')
    assert response.status_code == 400
    assert error_of(response)["param"].startswith("input")


def test_a_body_over_the_limit_is_413(gateway: GatewayProcess) -> None:
    huge = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "' + b"x" * 70_000 + b'"}]}'
    response = post(gateway, CHAT, huge)
    assert response.status_code == 413
    assert "65536 bytes" in error_of(response)["message"]


def test_a_chunked_body_over_the_limit_is_413(gateway: GatewayProcess) -> None:
    def chunks() -> Any:
        yield b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "'
        for _ in range(20):
            yield b"y" * 8192
        yield b'"}]}'

    response = httpx.post(
        f"{gateway.base_url}{CHAT}",
        content=chunks(),
        headers={"authorization": f"Bearer {gateway.api_key}", "content-type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 413
    assert error_of(response)["code"] == "request_too_large"


def test_a_body_just_under_the_limit_is_accepted(gateway: GatewayProcess) -> None:
    prefix = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "'
    suffix = b'"}]}'
    body = prefix + b"z" * (65536 - len(prefix) - len(suffix)) + suffix
    assert post(gateway, CHAT, body).status_code == 200


def test_unknown_path_is_404_in_openai_shape(gateway: GatewayProcess) -> None:
    response = httpx.get(
        f"{gateway.base_url}/v1/nope",
        headers={"authorization": f"Bearer {gateway.api_key}"},
    )
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


def test_wrong_method_is_405_in_openai_shape(gateway: GatewayProcess) -> None:
    response = httpx.get(f"{gateway.base_url}{CHAT}", headers={"authorization": f"Bearer {gateway.api_key}"})
    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"
    assert "POST" in response.headers["allow"]


def test_every_response_carries_a_request_id(gateway: GatewayProcess) -> None:
    response = httpx.get(f"{gateway.base_url}/healthz", headers={"x-request-id": "abc123"})
    assert response.headers["x-request-id"] == "abc123"


# -- JSON nested too deeply -----

CHAT_START = '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]'
EMBED_START = '{"model": "text-embedding-3-small", "input": "hi"'


def nested_array(depth: int) -> str:
    return "[" * depth + "]" * depth


def nested_object(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


DEEP_BODIES = {
    "chat, the whole body": (CHAT, nested_array),
    "chat, an extra field": (CHAT, lambda d: f'{CHAT_START}, "x": {nested_array(d - 1)}}}'),
    "chat, nested objects": (CHAT, lambda d: f'{CHAT_START}, "x": {nested_object(d - 1)}}}'),
    "chat, a message's extra field": (
        CHAT,
        lambda d: (
            '{"model": "gpt-4o-mini", "messages": [{"role": "user", "x": ' + nested_array(d - 3) + "}]}"
        ),
    ),
    "embeddings, the input": (
        "/v1/embeddings",
        lambda d: '{"model": "text-embedding-3-small", "input": ' + nested_array(d - 1) + "}",
    ),
    "embeddings, an extra field": (
        "/v1/embeddings",
        lambda d: f'{EMBED_START}, "x": {nested_array(d - 1)}}}',
    ),
}


@pytest.mark.parametrize("depth", [129, 1000, 5000, 10_000])
@pytest.mark.parametrize("where", list(DEEP_BODIES))
def test_json_nested_deeper_than_the_limit_is_400(gateway: GatewayProcess, where: str, depth: int) -> None:
    path, body = DEEP_BODIES[where]
    response = post(gateway, path, body(depth).encode())
    assert response.status_code == 400, response.text[:300]
    error = error_of(response)
    assert error["code"] == "json_too_deep"
    assert "128 levels" in error["message"]


@pytest.mark.parametrize(
    "where", ["chat, an extra field", "chat, nested objects", "embeddings, an extra field"]
)
def test_json_nested_as_deep_as_the_limit_is_served(gateway: GatewayProcess, where: str) -> None:
    path, body = DEEP_BODIES[where]
    assert post(gateway, path, body(128).encode()).status_code == 200


def test_brackets_inside_strings_are_not_nesting(gateway: GatewayProcess) -> None:
    content = '[{\\"' * 200  # 400 brackets, none of them nesting
    body = '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "' + content + '"}]}'
    response = post(gateway, CHAT, body.encode())
    assert response.status_code == 200, response.text[:300]


def test_an_admin_body_nested_too_deeply_is_400(gateway: GatewayProcess) -> None:
    response = gateway.admin("POST", "/tenants", content=f'{{"name": {nested_array(5000)}}}')
    assert response.status_code == 400
    assert error_of(response)["code"] == "json_too_deep"


# -- numbers as JSON Schema reads them (found by schemathesis) -----


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (CHAT, {"model": "gpt-4o-mini", "messages": HI, "top_p": False}, "top_p"),
        (CHAT, {"model": "gpt-4o-mini", "messages": HI, "max_tokens": True}, "max_tokens"),
        ("/v1/embeddings", {"model": "text-embedding-3-small", "input": [[False]]}, "input"),
        (
            "/v1/embeddings",
            {"model": "text-embedding-3-small", "input": "x", "dimensions": True},
            "dimensions",
        ),
    ],
)
def test_true_or_false_is_not_a_number(
    gateway: GatewayProcess, path: str, body: dict[str, Any], param: str
) -> None:
    response = post(gateway, path, json.dumps(body).encode())
    assert response.status_code == 400
    assert error_of(response)["param"].startswith(param)


def test_an_integer_written_with_a_fraction_of_zero_is_an_integer(gateway: GatewayProcess) -> None:
    body = {"model": "gpt-4o-mini", "messages": HI, "max_tokens": 3.0}
    response = post(gateway, CHAT, json.dumps(body).encode())
    assert response.status_code == 200
    assert response.json()["usage"]["completion_tokens"] <= 3


def test_stream_options_are_documented_as_needing_stream(gateway: GatewayProcess) -> None:
    schema = httpx.get(f"{gateway.base_url}/openapi.json").json()["components"]["schemas"][
        "ChatCompletionRequest"
    ]
    assert schema["then"] == {"properties": {"stream": {"const": True}}, "required": ["stream"]}
