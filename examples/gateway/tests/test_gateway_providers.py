"""Providers: the upstream provider speaks OpenAI's API (here: to another gateway), errors map to 5xx."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from llmproxy_gateway import GatewaySettings, MockProvider, UpstreamProvider, create_api
from llmproxy_gateway._app import with_edge
from llmproxy_gateway._providers import JSONObject
from llmproxy_gateway._schemas import ChatCompletionRequest, EmbeddingRequest

from .conftest import GatewayProcess, start_gateway

MESSAGES = [{"role": "user", "content": "ping"}]


@pytest.fixture(scope="module")
def relay(
    embedded_gateway: GatewayProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """A second gateway whose provider is the first gateway, reached as an OpenAI-compatible upstream."""
    workdir = tmp_path_factory.mktemp("relay")
    gateway = start_gateway(
        workdir,
        redis_url="memory://relay",
        database_url=f"sqlite:///{workdir / 'relay.db'}",
        name="relay",
        provider="openai",
        upstream_base_url=f"{embedded_gateway.base_url}/v1",
        upstream_api_key=embedded_gateway.api_key,
        upstream_timeout="5",
        model_map=json.dumps({"house-chat": "gpt-4o-mini", "house-embed": "text-embedding-3-small"}),
        chat_models=json.dumps(["house-chat", "unmapped-model"]),
        embedding_models=json.dumps(["house-embed"]),
    )
    gateway.provision("relay-tenant")
    yield gateway
    gateway.stop()


def client(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=gw.api_key, max_retries=0)


def test_upstream_provider_relays_a_completion_under_the_mapped_model(relay: GatewayProcess) -> None:
    with client(relay) as c:
        result = c.chat.completions.create(model="house-chat", messages=MESSAGES)
    assert result.choices[0].message.content == "This is a mock reply from llmproxy. You said: ping"
    assert result.model == "gpt-4o-mini"
    assert result.usage is not None
    assert result.usage.completion_tokens > 0


def test_upstream_provider_relays_a_stream_with_usage(relay: GatewayProcess) -> None:
    with client(relay) as c:
        chunks = list(
            c.chat.completions.create(
                model="house-chat",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices).endswith(
        "You said: ping"
    )
    assert chunks[-1].usage is not None


def test_upstream_provider_relays_embeddings(relay: GatewayProcess) -> None:
    with client(relay) as c:
        result = c.embeddings.create(model="house-embed", input="hello")
    assert len(result.data[0].embedding) == 16


def test_an_upstream_refusal_is_passed_on_as_a_4xx(relay: GatewayProcess) -> None:
    with client(relay) as c, pytest.raises(openai.NotFoundError) as caught:
        c.chat.completions.create(model="unmapped-model", messages=MESSAGES)
    assert "upstream rejected the request" in caught.value.message


def _settings(tmp_path: Path, **values: object) -> GatewaySettings:
    return GatewaySettings(database_url=f"sqlite:///{tmp_path / 'x.db'}", **values)


async def test_an_unreachable_upstream_is_a_502(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = UpstreamProvider(f"http://127.0.0.1:{port}/v1", timeout=2)
    app = with_edge(create_api(_settings(tmp_path), provider=provider), _settings(tmp_path))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
        response = await http.post(
            "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES}
        )
    await provider.aclose()
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"


async def test_a_silent_upstream_is_a_504_after_the_timeout(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # accepts connections into the backlog, never answers
        provider = UpstreamProvider(f"http://127.0.0.1:{listener.getsockname()[1]}/v1", timeout=0.3)
        app = with_edge(create_api(_settings(tmp_path), provider=provider), _settings(tmp_path))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
            response = await http.post(
                "/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"}
            )
        await provider.aclose()
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"


class ExplodingProvider(MockProvider):
    async def chat(self, request: ChatCompletionRequest, model: str) -> JSONObject:
        raise RuntimeError("secret internal detail")

    async def stream_chat(self, request: ChatCompletionRequest, model: str) -> AsyncIterator[JSONObject]:
        raise RuntimeError("secret internal detail")
        yield {}

    async def embed(self, request: EmbeddingRequest, model: str) -> JSONObject:
        raise RuntimeError("secret internal detail")


async def test_an_unexpected_error_is_a_500_that_leaks_nothing(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    app = with_edge(create_api(settings, provider=ExplodingProvider()), settings)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        response = await http.post(
            "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES}
        )
    assert response.status_code == 500
    assert response.json()["error"] == {
        "message": "internal server error",
        "type": "server_error",
        "code": "internal_error",
        "param": None,
    }
    assert "secret" not in response.text


async def test_the_mock_provider_is_deterministic() -> None:
    request = ChatCompletionRequest.model_validate({"model": "m", "messages": MESSAGES})
    provider = MockProvider()
    first, second = await provider.chat(request, "m"), await provider.chat(request, "m")
    assert first["choices"] == second["choices"]
    assert first["usage"] == second["usage"]


async def test_the_mock_stream_ends_with_a_usage_chunk_matching_its_tokens() -> None:
    request = ChatCompletionRequest.model_validate({"model": "m", "messages": MESSAGES, "stream": True})
    chunks = [c async for c in MockProvider().stream_chat(request, "m")]
    content_chunks = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == len(content_chunks)
