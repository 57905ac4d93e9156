"""The official openai client against a gateway served by uvicorn: the API is what OpenAI clients expect."""

from __future__ import annotations

import openai
import pytest

from llmproxy_gateway._tokens import count_chat_prompt_tokens, count_tokens

from .conftest import GatewayProcess

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there, gateway!"}]
EXPECTED_REPLY = "This is a mock reply from llmproxy. You said: Hello there, gateway!"


def sync_client(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.base_url}/v1", api_key=gw.api_key, max_retries=0)


def async_client(gw: GatewayProcess) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gw.base_url}/v1", api_key=gw.api_key, max_retries=0)


def test_models_lists_the_configured_chat_and_embedding_models(gateway: GatewayProcess) -> None:
    with sync_client(gateway) as client:
        names = [m.id for m in client.models.list()]
    assert names == ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]


def test_chat_completion_returns_the_mock_reply_with_its_usage(gateway: GatewayProcess) -> None:
    with sync_client(gateway) as client:
        result = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert result.choices[0].message.content == EXPECTED_REPLY
    assert result.choices[0].finish_reason == "stop"
    assert result.usage is not None
    assert result.usage.completion_tokens == count_tokens(EXPECTED_REPLY)
    assert result.usage.prompt_tokens == count_chat_prompt_tokens(["Be brief.", "Hello there, gateway!"])


def test_max_tokens_truncates_the_reply_with_finish_reason_length(gateway: GatewayProcess) -> None:
    with sync_client(gateway) as client:
        result = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=3)
    assert result.choices[0].message.content == "This is a"
    assert result.choices[0].finish_reason == "length"
    assert result.usage is not None
    assert result.usage.completion_tokens == 3


def test_sync_stream_yields_the_same_text_and_the_usage_when_asked(gateway: GatewayProcess) -> None:
    with sync_client(gateway) as client:
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == EXPECTED_REPLY
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == count_tokens(EXPECTED_REPLY)


def test_stream_without_include_usage_sends_no_usage_chunk(gateway: GatewayProcess) -> None:
    with sync_client(gateway) as client:
        chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_async_chat_completion(gateway: GatewayProcess) -> None:
    async with async_client(gateway) as client:
        result = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert result.choices[0].message.content == EXPECTED_REPLY


async def test_async_stream(gateway: GatewayProcess) -> None:
    async with async_client(gateway) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == EXPECTED_REPLY
    assert chunks[-1].usage is not None


def test_embeddings_are_deterministic_unit_vectors(gateway: GatewayProcess) -> None:
    with sync_client(gateway) as client:
        first = client.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"])
        again = client.embeddings.create(
            model="text-embedding-3-small", input="alpha", encoding_format="float"
        )
    assert len(first.data) == 2
    assert first.data[0].embedding == pytest.approx(again.data[0].embedding, rel=1e-6)
    assert first.data[0].embedding != first.data[1].embedding
    assert sum(x * x for x in first.data[0].embedding) == pytest.approx(1.0, rel=1e-5)
    assert first.usage.prompt_tokens == 2


def test_embeddings_honour_dimensions(gateway: GatewayProcess) -> None:
    with sync_client(gateway) as client:
        result = client.embeddings.create(model="text-embedding-3-small", input="x", dimensions=64)
    assert len(result.data[0].embedding) == 64


def test_unknown_model_is_a_404_not_found_error(gateway: GatewayProcess) -> None:
    with sync_client(gateway) as client, pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert caught.value.code == "model_not_found"


def test_an_embedding_model_is_not_a_chat_model(gateway: GatewayProcess) -> None:
    with sync_client(gateway) as client, pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="text-embedding-3-small", messages=MESSAGES)
    assert "is not a chat model" in caught.value.message
